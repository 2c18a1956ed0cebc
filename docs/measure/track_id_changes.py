"""Run from the checkout root: python docs/measure/track_id_changes.py 100 340
Per GT object: track-ID segments; classify each ID change as 'new' (a track born in that frame or within 2),
'lost' (a track previously on another gt object), and how long the gap was."""
import sys, collections, numpy as np
sys.path.insert(0, '.')  # run from the checkout root
from keras_solo.data.sequences import make_sequence, perturb
from keras_solo.runtime.track import Tracker, box_iou, linear_assignment
cnt = collections.Counter(); lost_boxes = collections.Counter()
for seed in range(int(sys.argv[1]), int(sys.argv[2])):
    seq = make_sequence(100, 8, size=(256, 128), seed=seed)
    recs = perturb(seq["gt"], seed=seed)
    t = Tracker(); owner = {}; first = {}
    hist = collections.defaultdict(list)
    for f, (g, r) in enumerate(zip(seq["gt"], recs)):
        out = t.update(r)
        for tid in out["track_ids"].tolist(): first.setdefault(tid, f)
        a = np.asarray(g["boxes"], float).copy(); a[:, 2:] += a[:, :2]
        b = np.asarray(out["boxes"], float).reshape(-1, 4).copy(); b[:, 2:] += b[:, :2]
        if len(a) and len(b):
            ov = box_iou(a, b); rr, cc = linear_assignment(np.where(ov >= 0.5, 1 - ov, np.inf), limit=1.0)
        else: rr, cc = [], []
        m = dict(zip(list(rr), list(cc)))
        for k, gid in enumerate(g["track_ids"].tolist()):
            hist[gid].append((f, int(out["track_ids"][m[k]]) if k in m else 0))
    # dominant ID per gt
    for gid, h in hist.items():
        ids = [tid for _, tid in h if tid]
        if not ids: continue
        dom = collections.Counter(ids).most_common(1)[0][0]
        prev, prev_f = None, None
        for f, tid in h:
            if tid and prev and tid != prev:
                other = [g2 for g2, h2 in hist.items() if g2 != gid and any(t2 == tid for _, t2 in h2 if _ < f)]
                kind = "swap_from_other" if other else ("new_track" if f - first[tid] <= 2 else "other")
                gap = f - prev_f
                cnt[(kind, "gap<=2" if gap <= 2 else ("gap<=10" if gap <= 10 else "gap>10"))] += 1
            if tid: prev, prev_f = tid, f
        cnt["wrong_frames"] += sum(1 for _, tid in h if tid and tid != dom)
        cnt["miss_frames"] += sum(1 for _, tid in h if not tid)
        cnt["frames"] += len(h)
for k, v in sorted(cnt.items(), key=str): print(k, v)
