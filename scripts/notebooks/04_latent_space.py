"""Source of notebooks/04_latent_space.ipynb: the graph-VAE's latent space.

Built by scripts/make_notebooks.py (see its docstring for the parameters cell)."""

CELLS = [
    ("md", """
        # The graph-VAE's latent space

        `graph-vae-moses` encodes a molecule into a point of a 56-dimensional space and decodes any point
        into a molecular graph, under valence rules, so every decode is a valid molecule. This notebook
        walks that space: the straight line between two drugs, the neighbourhood of one drug, and a 2-D
        map of a few hundred MOSES test molecules coloured by a property, to see whether the space is
        organised by chemistry a chemist cares about.

        A caveat first: this model reconstructs about 40 % of MOSES test molecules exactly, and drugs,
        which lie outside MOSES's lead-like range, less often. Points near a drug decode to molecules
        *like* it, not always to the drug itself; the tables below say which.
    """),
    ("parameters", """
        N_MAP = 300  # MOSES test molecules on the 2-D map
        N_NEIGHBOURS = 12  # distinct molecules around the drug
        STEPS = 8  # points on the line between the two drugs
    """),
    ("code", """
        import warnings

        import matplotlib.pyplot as plt
        import numpy as np
        from rdkit import Chem, DataStructs
        from rdkit.Chem import Draw

        import molgen as mg

        warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bars want ipywidgets

        vae = mg.load_pretrained("graph-vae-moses", device="cpu")
        lidocaine, metoprolol = "CCN(CC)CC(=O)Nc1c(C)cccc1C", "COCCc1ccc(OCC(O)CNC(C)C)cc1"


        def similarity(smiles: list[str], to: str) -> list[float]:
            \"\"\"Tanimoto similarity of ECFP4 fingerprints (radius 2, 2,048 bits).\"\"\"
            ref = mg.chem.morgan_fp(to)
            return [DataStructs.TanimotoSimilarity(ref, fp) for fp in mg.chem.morgan_fps(smiles)]


        def grid(smiles, legends):
            return Draw.MolsToGridImage([Chem.MolFromSmiles(s) for s in smiles], molsPerRow=4,
                                        subImgSize=(220, 170), legends=list(legends))
    """),
    ("md", """
        ## Interpolation between two drugs

        `vae.interpolate(a, b, steps)` decodes evenly spaced points on the line between the two latent
        means. The first and last rows are the reconstructions of the two drugs; `reconstructed` says
        whether each is the drug itself.
    """),
    ("code", """
        path = vae.interpolate(lidocaine, metoprolol, steps=STEPS)
        path["sim_lidocaine"] = similarity(path.smiles, lidocaine)
        path["sim_metoprolol"] = similarity(path.smiles, metoprolol)
        print(f"interpolation: {path.smiles.nunique()} distinct molecules in {len(path)} steps, all valid: {path.valid.all()}")
        path.round(2)
    """),
    ("code", """
        grid(path.smiles, [f"alpha {a:.2f}" for a in path.alpha])
    """),
    ("md", """
        ## The neighbourhood of a drug

        `vae.neighbours(smiles, radius, n)` decodes points on a sphere around the drug's latent mean and
        grows the radius until it has `n` distinct molecules (`radius`: where each was first found;
        `count`: how many points decoded to it). Similarity to the drug falls as the radius grows.
    """),
    ("code", """
        near = vae.neighbours(lidocaine, radius=0.5, n=N_NEIGHBOURS, seed=0)
        near["similarity"] = similarity(near.smiles, lidocaine)
        print(f"{near.smiles.nunique()} distinct neighbours of lidocaine from {near.attrs['draws']} points, "
              f"radius up to {near.attrs['max_radius']:.3g}")
        print("mean similarity by radius:", near.groupby("radius").similarity.mean().round(2).to_dict())
        near.round(3)
    """),
    ("code", """
        grid(near.smiles, [f"r {r:.2f}  sim {s:.2f}" for r, s in zip(near.radius, near.similarity, strict=True)])
    """),
    ("md", """
        ## A map of the space

        `mg.transfer.embed("graph-vae-moses", smiles)` gives each molecule's latent mean (the same vectors
        the transfer notebook uses as features). Two projections to 2-D with scikit-learn: PCA (linear;
        distances along its axes are latent distances) and t-SNE (keeps neighbourhoods, not distances).
        Colour: QED and Crippen logP from `mg.score`.
    """),
    ("code", """
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        test = mg.datasets.load("moses", split="test", nrows=N_MAP)
        Z = mg.transfer.embed("graph-vae-moses", test.smiles)
        print(f"embedding shape: {Z.shape}, unreadable rows: {int(np.isnan(Z).any(axis=1).sum())}")
        props = mg.score(test.smiles, properties=["qed", "logp"])
        pca = PCA(n_components=2, random_state=0).fit(Z)
        xy_pca = pca.transform(Z)
        xy_tsne = TSNE(n_components=2, perplexity=min(30, len(Z) // 4), init="pca", random_state=0).fit_transform(Z)
        drugs = mg.transfer.embed("graph-vae-moses", [lidocaine, metoprolol])
        print(f"PCA: the first two axes hold {pca.explained_variance_ratio_.sum():.0%} of the latent variance")
    """),
    ("code", """
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
        for ax, (xy, name), prop in zip(axes, [(xy_pca, "PCA"), (xy_pca, "PCA"), (xy_tsne, "t-SNE")],
                                        ["qed", "logp", "qed"], strict=True):
            points = ax.scatter(xy[:, 0], xy[:, 1], c=props[prop], s=10, cmap="viridis")
            fig.colorbar(points, ax=ax, label=prop)
            ax.set(title=f"{name} of {len(Z)} MOSES test molecules", xticks=[], yticks=[])
        for (x, y), label in zip(pca.transform(drugs), ["lidocaine", "metoprolol"], strict=True):
            for ax in axes[:2]:
                ax.scatter([x], [y], marker="*", s=200, c="crimson", edgecolors="k")
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6))
        fig.tight_layout()
    """),
    ("md", """
        How much of a property the space holds in its neighbourhoods, as a number: predict each
        molecule's QED and logP from its 10 nearest latent neighbours (cross-validated k-NN regression).
        An R² well above 0 means nearby points have similar values; compare with the ridge and GP heads
        of notebook 02, which learn a property from these vectors.
    """),
    ("code", """
        from sklearn.model_selection import cross_val_score
        from sklearn.neighbors import KNeighborsRegressor

        for prop in ("qed", "logp"):
            r2 = cross_val_score(KNeighborsRegressor(n_neighbors=min(10, len(Z) // 5)), Z, props[prop], cv=5, scoring="r2")
            print(f"{prop}: k-NN R2 from latent neighbours {r2.mean():.2f} ± {r2.std():.2f}")
    """),
]
