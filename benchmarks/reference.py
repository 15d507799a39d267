"""The published generator, written from METHOD.md as a per-tuple loop: the yardstick.

For each tuple it reads every image's features from disk, and for each hop it
computes the pair's similarity matrix, matches the surviving chains forward,
searches back among them, and drops chains whose back-match lands farther than
the radius. Labels of every ordered pair are collected one chain at a time in
Python dictionaries. Nothing is shared between tuples. Same inputs and rules as
the service's chain stage (labelgen.labels.candidates), so the candidates must
be identical.
"""

import sys

import torch

from labelgen.features import FeatureCache
from labelgen.labels import Foreground


def reference_candidates(tuples, features: FeatureCache, radius: float) -> dict:
    """{(src id, tgt id, hops, src x, src y, tgt x, tgt y): [support, smallest cycle error px, similarity]}."""
    labels = {}
    for t in tuples:
        fgs = [Foreground.of(features.load(i)) for i in t]  # from disk, per tuple
        if any(len(f.feats) == 0 for f in fgs):
            continue
        chains = [[p] for p in range(len(fgs[0].feats))]
        errors = [[] for _ in chains]
        for h in range(len(t) - 1):
            a, b = fgs[h], fgs[h + 1]
            sim = a.feats @ b.feats.T  # recomputed for every tuple
            seeds = sorted({c[-1] for c in chains})
            seed_t = torch.tensor(seeds)
            targets = sim[seed_t].argmax(dim=1)
            back = seed_t[sim[seed_t][:, targets].argmax(dim=0)]  # back among this hop's seeds
            err = (a.grid[back] - a.grid[seed_t]).norm(dim=1)
            hop = {s: (int(tg), float(e)) for s, tg, e in zip(seeds, targets, err)}
            kept_chains, kept_errors = [], []
            for c, e in zip(chains, errors):
                target, cycle = hop[c[-1]]
                if cycle <= radius:
                    kept_chains.append(c + [target])
                    kept_errors.append(e + [cycle * a.cell_px])
            chains, errors = kept_chains, kept_errors
        proposed = set()  # support counts tuples, not chains
        for c, e in zip(chains, errors):
            for i in range(len(t)):
                for j in range(len(t)):
                    if i == j:
                        continue
                    (sx, sy), (tx, ty) = fgs[i].pixels[c[i]].tolist(), fgs[j].pixels[c[j]].tolist()
                    key = (t[i], t[j], abs(j - i), sx, sy, tx, ty)
                    cycle = max(e[min(i, j) : max(i, j)])
                    entry = labels.get(key)
                    if entry is None:
                        labels[key] = [0, cycle, float(fgs[i].feats[c[i]] @ fgs[j].feats[c[j]])]
                    else:
                        entry[1] = min(entry[1], cycle)
                    proposed.add(key)
        for key in proposed:
            labels[key][0] += 1
    return labels


if __name__ == "__main__":
    from benchmarks import library_main

    sys.exit(library_main(__spec__.name, __doc__))
