#!/bin/sh
# A stand-in for docking or an in-house model, for the `external` objective component
# (scripts/configs/objective_example_all.toml): reads SMILES one per line on stdin and writes one
# score per line on stdout, in the same order. Here the score is the number of carbon atoms,
# counted in the SMILES text (C and c, not the C of Cl), so it needs nothing but awk.
# Replace the awk line with your own program; print "nan" for a molecule you cannot score.
awk '{ s = $0; gsub(/Cl/, "", s); print gsub(/[Cc]/, "", s) }'
