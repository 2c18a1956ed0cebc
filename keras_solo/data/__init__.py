"""Data: COCO JSON -> records (:mod:`.coco`), image + mask geometry
(:mod:`.transforms`), and the ``tf.data`` pipeline (:mod:`.pipeline`).

Import the submodules directly; :mod:`.pipeline` loads TensorFlow, the others
do not.
"""
