"""Engines on the training side: a `SOLO` model behind the runtime's `Engine`
interface, so one loop predicts, tracks, evaluates and benchmarks every format.

- `KerasEngine(model)`: letterbox (numpy) -> the model's forward pass and
  `decode` (compiled for the Keras backend) -> undo the letterbox; the same
  record as `keras_solo.runtime.engine.Engine` gives for an export.
- `export_graph_engine(path)`: a `.keras` file run as its export graph
  (`keras_solo.export.graph.serving_function`: same top-K, Matrix NMS in the
  graph) in a ``tf.function`` limited to a number of threads; what
  `keras-solo benchmark` times for ``.keras``.
- `load_engine(path)`: a `.keras` file (with ``eval.*`` overrides) as a
  `KerasEngine`, or an export (``.tflite`` / ``.onnx``) through the runtime's
  `open_engine`.
"""

import dataclasses

import numpy as np

from keras_solo.errors import SoloError
from keras_solo.runtime.engine import Engine, open_engine
from keras_solo.runtime.formats import format_of


def inference_functions(model):
    """`(network, decode)`: the model's forward pass and `decode`, compiled
    for the Keras backend (tf.function on TensorFlow, jax.jit on JAX; the
    weights are read when the functions are made, so make them again after
    training further)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return (tf.function(lambda x: model(x, training=False), reduce_retracing=True),
                tf.function(model.decode, reduce_retracing=True))
    if backend == "jax":
        import jax

        return jax.jit(lambda x: model(x, training=False)), jax.jit(model.decode)
    return (lambda x: model(x, training=False)), model.decode


class KerasEngine(Engine):
    """A built `SOLO` behind the runtime's `Engine` (letterbox -> network -> undo the letterbox).

    Args:
        model: a built `SOLO`.
        network: function (1, H, W, 3) float32 -> dict scores / labels / masks
            / valid; default the model's forward pass and `decode`, compiled
            for the Keras backend (`inference_functions`).
        path: the model file, for reports. threads: for reports.
        meta: what a report shows of it (quant, top_k ...).
    """

    format = "keras"

    def __init__(self, model, *, network=None, path="", threads=None, meta=None):
        super().__init__(path, input_size=model.input_size, class_names=model.class_names,
                         mask_thr=model.decoder.mask_thr, threads=threads or 0, meta={"quant": "fp32", **(meta or {})})
        self.model = model
        if network is None:
            forward, decode = inference_functions(model)

            def network(batch):
                return decode(forward(batch))

        self._network = network

    def network(self, batch):
        return {k: np.asarray(v) for k, v in self._network(batch).items()}


def apply_eval_overrides(model, overrides):
    """`--set eval.key=value` on a loaded model: a new `model.decoder`, its values checked as the config's."""
    from keras_solo.config import config_from_dict, parse_override

    allowed = {f.name for f in dataclasses.fields(model.decoder)}
    values = {}
    for text in overrides or ():
        key, value = parse_override(text)
        section, _, name = key.partition(".")
        if section != "eval" or name not in allowed:
            raise SoloError(f"override {key}: only eval.* keys apply to a trained model ({', '.join(sorted(allowed))})")
        values[name] = value
    if values:
        checked = config_from_dict({"eval": {**dataclasses.asdict(model.decoder), **values}}, "override").eval
        model.decoder = model.decoder.replace(**{k: getattr(checked, k) for k in values})


def load_engine(path, *, threads=None, overrides=()):
    """The engine of a `.keras` model (with ``eval.*`` overrides) or of an exported `.tflite` / `.onnx`."""
    if format_of(path) is not None:
        if overrides:
            raise SoloError(f"{path}: --set applies to .keras models; an export has its thresholds in the graph "
                            "(export again with --set)")
        return open_engine(path, threads)
    from keras_solo.model.solo import load_model

    model = load_model(path)
    apply_eval_overrides(model, overrides)
    return KerasEngine(model, path=path, threads=threads)


def export_graph_engine(model_path, *, threads=2, top_k=None):
    """A `KerasEngine` running the export graph of a `.keras` model in TensorFlow.

    Args:
        model_path: the `.keras` file.
        threads: TensorFlow intra-op threads (inter-op: 1). Set before
            TensorFlow runs anything; later calls keep the first setting.
        top_k: candidate budget; default the run's config.yaml `export.top_k`
            next to the model, else `ExportConfig().top_k`. The run's
            `export.nms_pool` applies too.
    """
    import tensorflow as tf

    from keras_solo.config import ExportConfig, load_run_config
    from keras_solo.export.graph import input_signature, serving_function, use_export_decoding
    from keras_solo.model.solo import load_model

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process
    run_config = load_run_config(model_path)
    export_config = run_config.export if run_config is not None else ExportConfig()
    model = use_export_decoding(load_model(model_path), export_config)
    if top_k is None:
        top_k = export_config.top_k
    graph = tf.function(serving_function(model, top_k=top_k), input_signature=input_signature(model))
    return KerasEngine(model, network=lambda batch: graph(tf.constant(batch)), path=model_path, threads=threads,
                       meta={"top_k": int(top_k), "gflops": None})
