"""What the tracker does with each ground-truth box (RESULTS, "Where the rest goes"):
    python docs/measure/track_misses.py 100 340 [exact]"""
import sys, collections, numpy as np
sys.path.insert(0, '.')  # run from the checkout root
from keras_solo.data.sequences import make_sequence, perturb
from keras_solo.runtime.track import Tracker, box_iou, linear_assignment
cnt = collections.Counter()
exact = len(sys.argv) > 3
for seed in range(int(sys.argv[1]), int(sys.argv[2])):
    seq = make_sequence(100, 8, size=(256, 128), seed=seed)
    recs = perturb(seq["gt"], seed=seed, **(dict(drop=0, jitter=0, low_fraction=0) if exact else {}))
    t = Tracker()
    seen = set()
    for f, (g, r) in enumerate(zip(seq["gt"], recs)):
        out = t.update(r, tentative=True)
        a = np.asarray(g["boxes"], float).copy(); a[:, 2:] += a[:, :2]
        def match(bx):
            bx = np.asarray(bx, float).reshape(-1, 4).copy(); bx[:, 2:] += bx[:, :2]
            if not len(a) or not len(bx): return {}, np.zeros((len(a), len(bx)))
            ov = box_iou(a, bx); rr, cc = linear_assignment(np.where(ov >= 0.5, 1 - ov, np.inf), limit=1.0)
            return dict(zip(rr.tolist(), cc.tolist())), ov
        confirmed = np.array([s != 1 for s in out["states"]], bool)
        mo, ovo = match(np.asarray(out["boxes"]).reshape(-1, 4)[confirmed])
        md, ovd = match(r["boxes"])
        mt, _ = match(np.asarray(out["boxes"]).reshape(-1, 4)[~confirmed])
        for k, gid in enumerate(g["track_ids"].tolist()):
            newobj = gid not in seen; seen.add(gid)
            if k in mo: cnt["ok"] += 1; continue
            if k not in md:
                best = ovd[k].max() if ovd.size else 0
                cnt["no det (dropped)" if best == 0 else ("det iou<0.5 (jitter)" if best > 0 else "x")] += 1
                continue
            n = md[k]; s = r["scores"][n]
            if k in mt: cnt["tentative" + (" (new obj)" if newobj else "")] += 1
            elif s < 0.1: cnt["score<0.1"] += 1
            elif s < 0.5: cnt["low det unmatched"] += 1
            else: cnt["high det not output"] += 1
for k, v in sorted(cnt.items()): print(k, v)
