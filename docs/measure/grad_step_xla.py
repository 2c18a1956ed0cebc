"""grad_step_freeze.py with the FPN's nearest upsampling as a repeat (XLA has no CPU kernel for ResizeNearestNeighborGrad): XLA=1 python docs/measure/grad_step_xla.py upto03bn."""
import runpy, sys
from keras import ops
import keras_solo.model.fpn as fpn
def up(top, height, width):
    u = ops.repeat(ops.repeat(top, 2, axis=1), 2, axis=2)
    return u[:, :height, :width, :]
fpn._upsample_like = up
sys.argv = ["freeze.py"] + sys.argv[1:]
runpy.run_path(__file__.replace("grad_step_xla", "grad_step_freeze"), run_name="__main__")
