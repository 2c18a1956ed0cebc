"""train_step_settings.py under TF inter/intra-op thread counts: python docs/measure/train_step_threads.py frozen 1,2."""
import os, sys, runpy
import tensorflow as tf
i, j = sys.argv[2].split(",")
tf.config.threading.set_inter_op_parallelism_threads(int(i))
tf.config.threading.set_intra_op_parallelism_threads(int(j))
sys.argv = ["fitfix.py", sys.argv[1]]
runpy.run_path(__file__.replace("train_step_threads", "train_step_settings"), run_name="__main__")
