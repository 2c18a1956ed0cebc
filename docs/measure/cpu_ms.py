"""CPU-ms per call of .tflite files on 1 thread (thread CPU time: other jobs do not inflate it),
interleaved in rounds: python docs/measure/cpu_ms.py A.tflite B.tflite ..."""
import sys, time, statistics, numpy as np
from ai_edge_litert.interpreter import Interpreter
paths=sys.argv[1:]
img=np.random.default_rng(0).uniform(0,255,(1,320,640,3)).astype(np.float32)
its=[]
for p in paths:
    it=Interpreter(model_path=p,num_threads=1); it.allocate_tensors(); it.set_tensor(it.get_input_details()[0]['index'],img); it.invoke(); its.append(it)
res={p:[] for p in paths}
for r in range(5):
    for p,it in zip(paths,its):
        for _ in range(5):
            t=time.thread_time(); it.invoke(); res[p].append(1e3*(time.thread_time()-t))
for p in paths: print(f"{p:50s} p50 {statistics.median(res[p]):6.2f} min {min(res[p]):6.2f} CPU-ms (1 thread)")
