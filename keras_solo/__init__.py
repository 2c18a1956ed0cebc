"""keras-solo: SOLO instance segmentation with grid attention for Keras 3.

The public API (`keras_solo.api`) loads on first use, so ``import
keras_solo.runtime`` on a device stays free of TensorFlow and Keras::

    import keras_solo
    model = keras_solo.SOLO.from_preset("demo")

(so load a saved model with `keras_solo.load_model`, which registers the
layers, rather than ``keras.saving.load_model``).
"""

__all__ = ["SOLO", "PyramidBackbone", "preset_names", "load_config", "load_model", "coco_dataset", "train_run",
           "detect", "load_engine", "coco_metrics", "export_model", "COCOEvalCallback", "ResumableBackup"]


def __getattr__(name):
    if name in __all__:
        from keras_solo import api

        return getattr(api, name)
    raise AttributeError(f"module 'keras_solo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
