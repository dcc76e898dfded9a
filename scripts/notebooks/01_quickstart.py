"""Source of notebooks/01_quickstart.ipynb: load, score, sample, evaluate, the graph-VAE's latent space.

Built by scripts/make_notebooks.py (see its docstring); no parameters cell: it runs as written."""

CELLS = [
    ("md", "# molgen quickstart\n\nLoad a data set, score molecules, sample from the two main shipped models "
           "(`smiles-gpt-moses`, `graph-vae-moses`), measure the samples with the MOSES metrics, and move "
           "around the graph-VAE's latent space. Everything runs on a laptop CPU in a minute or two; the "
           "first MOSES evaluation on a machine builds its reference caches once (a few minutes)."),
    ("code", """
        import molgen as mg

        mg.datasets.list()[["name", "n", "targets", "description"]]
    """),
    ("md", "## Data and scores\n\nEvery loader returns a DataFrame with `smiles`, the targets, `split`, and "
           "`valid` / `invalid_reason`: rows that RDKit cannot read are kept and flagged, never dropped."),
    ("code", """
        sol = mg.datasets.load("solubility")
        print(len(sol), "molecules;", sol.valid.sum(), "valid")
        sol.head()
    """),
    ("code", """
        scores = mg.score(sol.smiles.head(20), properties=["qed", "sa", "logp", "mw", "pains", "brenk"])
        scores.head()
    """),
    ("md", "## Sampling from the SMILES transformer\n\n`sample` returns one row per sampled string, with its "
           "validity and the model's log-likelihood; the same seed gives the same molecules. Sampling runs "
           "under a SMILES grammar by default (no unclosed rings or branches, no atom over its valence); "
           "`mg.sample(gpt, 500, seed=0, grammar=False)` samples the raw model. For screening many "
           "candidates, `mg.load_pretrained(\"smiles-gpt-moses-small\")` is a student distilled from it, a "
           "quarter of its size, that samples several times faster on a CPU (its card has its metrics)."),
    ("code", """
        gpt = mg.load_pretrained("smiles-gpt-moses")
        samples = mg.sample(gpt, 500, seed=0)
        print(f"valid: {samples.valid.mean():.3f}")
        samples.head()
    """),
    ("md", "## MOSES metrics\n\n`mg.evaluate` gives the MOSES table's keys (validity, uniqueness, novelty, "
           "FCD, SNN, Frag, Scaf, IntDiv, Filters, property distances) plus GuacaMol's KL score. FCD depends"
           " on the sample size: compare it only between sets of the same `n`."),
    ("code", """
        result = mg.evaluate(samples.smiles)
        {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    """),
    ("md", "## The graph-VAE: encode, decode, interpolate\n\nIts decoder builds graphs under valence rules, so"
           " every decoded molecule is valid by construction. Valid is not the same as faithful: this model "
           "reconstructs about 40 % of MOSES test molecules exactly, and neither aspirin nor paracetamol. "
           "`interpolate`'s first and last rows are those reconstructions, with the SMILES given in `input` "
           "and `reconstructed` saying whether the decode is that molecule. `neighbours` returns `n` "
           "distinct molecules around one: close to it every point decodes to the same graph, so it draws "
           "further out until it has `n` (`radius`: how far the point that first gave it lay; `count`: how "
           "many points decoded to it)."),
    ("code", """
        vae = mg.load_pretrained("graph-vae-moses")
        aspirin, paracetamol = "CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Nc1ccc(O)cc1"
        z = vae.encode([aspirin, paracetamol])
        print("latent shape:", tuple(z.shape))
        vae.decode(z)
    """),
    ("code", """
        vae.interpolate(aspirin, paracetamol, steps=6)
    """),
    ("code", """
        near = vae.neighbours(aspirin, radius=0.5, n=8, seed=0)
        print(near.smiles.nunique(), "distinct neighbours from", near.attrs["draws"], "points, radius up to", near.attrs["max_radius"])
        near
    """),
    ("code", """
        prior = mg.sample(vae, 200, seed=0)
        print(f"valid: {prior.valid.mean():.3f}")
        prior.head()
    """),
    ("md", "## Saving results\n\n`mg.io.write_table` writes CSV, TSV, SMI, SDF or Parquet with the same "
           "columns."),
    ("code", """
        import tempfile, pathlib

        out = pathlib.Path(tempfile.mkdtemp()) / "gpt_samples.sdf"
        mg.io.write_table(mg.score(samples.smiles, properties=["qed", "sa"]), out)
        back = mg.io.read_table(out)
        print(len(back), "rows back from", out.name)
    """),
]
