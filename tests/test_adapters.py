"""Tensor, optimizer-state and tokenizer adapters, and the Hugging Face export.

The reference ``safetensors`` package reads what the adapters write and writes
what they read, so any safetensors reader opens a stored weights blob.
"""

from __future__ import annotations

import json
import math
import pickle
import struct

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tokenizers import Tokenizer, normalizers

from statecheckpoint import (
    HyperParameters,
    InvalidInputError,
    ModelCheckpoint,
    NotFoundError,
)
from statecheckpoint.adapters import numpy as np_adapter
from statecheckpoint.adapters import torch as torch_adapter
from statecheckpoint.adapters.huggingface import export_huggingface
from statecheckpoint.adapters.tokenizers import from_tokenizer_data, to_tokenizer_data

NUMPY_DTYPES = [
    np.bool_,
    np.uint8,
    np.int8,
    np.int16,
    np.uint16,
    np.float16,
    np.int32,
    np.uint32,
    np.float32,
    np.int64,
    np.uint64,
    np.float64,
]
SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "embed.weight": rng.normal(size=(50, 8)).astype(np.float32),
        "head.bias": rng.normal(size=3),
        "mask": np.array([True, False, True]),
        "step": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.int16),
        "transposed": np.arange(12, dtype=np.int32).reshape(3, 4).T,
        "big_endian": np.arange(5, dtype=">f8"),
    }


def _assert_same(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        assert got[name].dtype == value.dtype.newbyteorder("="), name
        assert np.array_equal(got[name], value), name


# -- numpy and the safetensors format -------------------------------------------


def test_adapters_numpy_round_trip_keeps_names_dtypes_shapes_and_values():
    arrays = _arrays()

    blob = np_adapter.to_safetensors(arrays)

    _assert_same(np_adapter.from_safetensors(blob), arrays)


def test_adapters_numpy_blob_opens_with_the_reference_safetensors_reader():
    arrays = _arrays()

    blob = np_adapter.to_safetensors(arrays, metadata={"note": "é"})

    _assert_same(safetensors.numpy.load(bytes(blob)), arrays)


def test_adapters_numpy_reads_what_the_reference_writer_wrote():
    arrays = {name: a for name, a in _arrays().items() if a.flags.c_contiguous}

    blob = safetensors.numpy.save(arrays, metadata={"format": "np"})

    _assert_same(np_adapter.from_safetensors(blob), arrays)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_adapters_numpy_every_safetensors_dtype_round_trips(dtype):
    array = np.arange(-3, 9).astype(dtype).reshape(3, 4)

    blob = np_adapter.to_safetensors({"x": array})

    assert np.array_equal(np_adapter.from_safetensors(blob)["x"], array)
    assert np.array_equal(safetensors.numpy.load(bytes(blob))["x"], array)


def test_adapters_numpy_load_views_the_blob_aligned_and_without_a_copy():
    blob = np_adapter.to_safetensors(_arrays())

    arrays = np_adapter.from_safetensors(blob)
    copies = np_adapter.from_safetensors(blob, copy=True)

    backing = np.frombuffer(blob, dtype=np.uint8)
    for name, array in arrays.items():
        if array.size == 0:
            continue  # an empty array shares nothing with anything
        assert np.shares_memory(array, backing), name
        assert not np.shares_memory(copies[name], backing), name
        assert array.ctypes.data % array.dtype.itemsize == 0, name
        assert array.flags.writeable, name


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__"),
        hnp.arrays(
            st.sampled_from(NUMPY_DTYPES),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        ),
        max_size=5,
    )
)
def test_adapters_numpy_round_trip_holds_for_any_arrays(arrays):
    try:
        blob = np_adapter.to_safetensors(arrays)
    except InvalidInputError as exc:  # names with lone surrogates are not UTF-8
        assert "not UTF-8" in str(exc)
        return

    back = np_adapter.from_safetensors(blob)

    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].shape == array.shape
        assert back[name].tobytes() == array.tobytes()  # NaN payloads included


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"c": np.zeros(2, dtype=np.complex64)}, "complex64 has no safetensors"),
        ({"o": np.array(["a", None], dtype=object)}, "object has no safetensors"),
        ({"": np.zeros(1)}, "tensor name ''"),
        ({"__metadata__": np.zeros(1)}, "tensor name '__metadata__'"),
    ],
)
def test_adapters_numpy_refuses_what_safetensors_cannot_hold(arrays, match):
    with pytest.raises(InvalidInputError, match=match):
        np_adapter.to_safetensors(arrays)


def _header(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "too short"),
        (b"\x00" * 7, "too short"),
        (struct.pack("<Q", 1 << 40) + b"{}", "does not fit"),
        (_header(b"not json"), "not JSON"),
        (_header(b"[1, 2]"), "not a JSON object"),
        (_header(b'{"__metadata__": {"a": 1}}'), "not a map of str to str"),
        (
            _header(b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}')
            + b"\x00" * 4,
            "bad entry",
        ),
        (
            _header(b'{"x": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}')
            + b"\x00" * 4,
            "bad entry",
        ),
        (
            _header(b'{"x": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}')
            + b"\x00" * 3,
            "starts at 1",
        ),
        (
            _header(b'{"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}')
            + b"\x00" * 5,
            "cover 2 bytes, the data holds 5",
        ),
    ],
)
def test_adapters_reading_a_malformed_blob_names_the_problem(blob, match):
    with pytest.raises(InvalidInputError, match=match):
        np_adapter.from_safetensors(blob)


def test_adapters_numpy_refuses_bfloat16_and_points_to_torch():
    blob = torch_adapter.to_safetensors({"w": torch.ones(2, dtype=torch.bfloat16)})

    with pytest.raises(InvalidInputError, match="adapters.torch"):
        np_adapter.from_safetensors(blob)


def test_adapters_stored_weights_file_opens_with_safe_open(filesystem_store):
    arrays = _arrays()
    checkpoint_id = filesystem_store.save_checkpoint(
        ModelCheckpoint(weights=np_adapter.to_safetensors(arrays))
    )

    path = filesystem_store.active_root / "models" / str(checkpoint_id) / "weights.bin"
    with safetensors.safe_open(str(path), framework="np") as opened:
        read = {name: opened.get_tensor(name) for name in opened.keys()}  # noqa: SIM118

    _assert_same(read, arrays)


def test_adapters_weights_round_trip_through_every_store(store):
    arrays = _arrays()
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(weights=np_adapter.to_safetensors(arrays))
    )

    loaded = store.load_checkpoint(checkpoint_id)

    _assert_same(np_adapter.from_safetensors(loaded.weights), arrays)
    _assert_same(safetensors.numpy.load(bytes(loaded.weights)), arrays)


# -- nested state (optimizer state) ----------------------------------------------


def _state() -> dict:
    return {
        "state": {
            0: {"step": np.float32(3), "exp_avg": np.ones((2, 2)), "flag": True},
            1: {"step": 4, "momentum_buffer": None},
        },
        "param_groups": [
            {
                "lr": 1e-3,
                "betas": (0.9, 0.999),
                "eps": float("nan"),
                "clip": float("-inf"),
                "params": [0, 1],
                "name": "décodeur",
                "fused": None,
            }
        ],
        (1, "tuple key"): [[], {}, ()],
        "0": "str key beside int key 0",
    }


def _same_state(a, b) -> bool:
    if isinstance(a, np.ndarray | np.generic):
        return type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float):
        return type(b) is float and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and list(a) == list(b)
            and all(_same_state(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_state, a, b))
    return type(a) is type(b) and a == b


def test_adapters_state_round_trips_keys_tuples_scalars_and_special_floats():
    state = _state()

    back = np_adapter.state_from_bytes(np_adapter.state_to_bytes(state))

    assert _same_state(state, back)


def test_adapters_state_blob_is_plain_safetensors_with_the_structure_as_json():
    blob = np_adapter.state_to_bytes(_state())

    tensors = safetensors.numpy.load(bytes(blob))
    length = struct.unpack("<Q", blob[:8])[0]
    metadata = json.loads(bytes(blob[8 : 8 + length]))["__metadata__"]

    assert sorted(tensors) == ["state.0.exp_avg", "state.0.step"]
    assert metadata["format"] == "statecheckpoint.state/1"
    json.loads(metadata["structure"])  # strict JSON: NaN is spelled out


def test_adapters_state_load_never_unpickles(monkeypatch):
    blob = torch_adapter.state_to_bytes(_torch_optimizer()[1].state_dict())

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    state = torch_adapter.state_from_bytes(blob)

    assert state["state"][0]["exp_avg"].dtype == torch.float32


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"a": {1, 2}}, "state at 'a': a set cannot be stored"),
        ({"a": [object()]}, "state at 'a.0': a object cannot be stored"),
        (
            {"a": np.zeros(1, dtype=np.complex128)},
            "complex128 has no safetensors equivalent",
        ),
    ],
)
def test_adapters_state_refuses_values_it_cannot_store(state, match):
    with pytest.raises(InvalidInputError, match=match):
        np_adapter.state_to_bytes(state)


def test_adapters_state_and_plain_tensors_are_not_mistaken_for_each_other():
    weights = np_adapter.to_safetensors({"w": np.zeros(2)})

    with pytest.raises(InvalidInputError, match="holds plain tensors"):
        np_adapter.state_from_bytes(weights)
    assert "state.0.exp_avg" in np_adapter.from_safetensors(
        np_adapter.state_to_bytes(_state())
    )


# -- torch -----------------------------------------------------------------------


def _torch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(30, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 30)
    )


def _torch_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = _torch_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, amsgrad=True)
    for step in range(3):
        _torch_step(model, optimizer, step)
    return model, optimizer


def _torch_step(model, optimizer, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 30, (4, 6), generator=generator)
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(
        model(tokens).reshape(-1, 30), tokens.roll(1, dims=1).reshape(-1)
    )
    loss.backward()
    optimizer.step()
    return loss.detach()


TORCH_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.float16,
    torch.bfloat16,
    torch.int32,
    torch.float32,
    torch.int64,
    torch.float64,
    torch.float8_e5m2,
    torch.float8_e4m3fn,
]


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    # torch.equal is not implemented for every dtype (float8); bytes always are.
    return tensor.contiguous().reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_adapters_torch_every_dtype_round_trips_and_opens_with_the_reference(dtype):
    from safetensors.torch import load

    tensor = torch.arange(-3, 9).reshape(3, 4).to(dtype)
    tensors = {"x": tensor, "scalar": tensor[1, 2].clone(), "t": tensor.T}

    blob = torch_adapter.to_safetensors(tensors)

    for read in (torch_adapter.from_safetensors(blob), load(bytes(blob))):
        for name, expected in tensors.items():
            assert read[name].dtype == dtype, name
            assert read[name].shape == expected.shape, name
            assert torch.equal(_bits(read[name]), _bits(expected)), name


def test_adapters_torch_reads_what_the_reference_writer_wrote():
    from safetensors.torch import save

    state = _torch_model().state_dict()

    read = torch_adapter.from_safetensors(save(state))

    assert read.keys() == state.keys()
    assert all(torch.equal(read[name], state[name]) for name in state)


def test_adapters_torch_model_reloads_from_a_stored_checkpoint(filesystem_store):
    model = _torch_model()
    checkpoint_id = filesystem_store.save_checkpoint(
        ModelCheckpoint(weights=torch_adapter.to_safetensors(model.state_dict()))
    )

    fresh = torch.nn.Sequential(
        torch.nn.Embedding(30, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 30)
    )
    loaded = filesystem_store.load_checkpoint(checkpoint_id)
    fresh.load_state_dict(torch_adapter.from_safetensors(loaded.weights))

    tokens = torch.arange(12).reshape(2, 6)
    assert torch.equal(fresh(tokens), model(tokens))


def test_adapters_torch_training_resumed_from_stored_state_matches_uninterrupted(
    filesystem_store,
):
    model, optimizer = _torch_optimizer()
    checkpoint_id = filesystem_store.save_checkpoint(
        ModelCheckpoint(
            epoch=3,
            weights=torch_adapter.to_safetensors(model.state_dict()),
            optimizer_state=torch_adapter.state_to_bytes(optimizer.state_dict()),
        )
    )
    expected = [_torch_step(model, optimizer, seed) for seed in (10, 11, 12)]

    loaded = filesystem_store.load_checkpoint(checkpoint_id)
    resumed = _torch_model()
    resumed.load_state_dict(torch_adapter.from_safetensors(loaded.weights))
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=0.5)
    resumed_optimizer.load_state_dict(
        torch_adapter.state_from_bytes(loaded.optimizer_state)
    )
    got = [_torch_step(resumed, resumed_optimizer, seed) for seed in (10, 11, 12)]

    assert resumed_optimizer.param_groups[0]["lr"] == 1e-2
    assert resumed_optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert [loss.item() for loss in got] == [loss.item() for loss in expected]
    for name, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_adapters_torch_optimizer_state_keeps_structure_and_tensor_types():
    _, optimizer = _torch_optimizer()
    original = optimizer.state_dict()

    back = torch_adapter.state_from_bytes(torch_adapter.state_to_bytes(original))

    assert back["param_groups"] == original["param_groups"]
    assert back["state"].keys() == original["state"].keys()
    for index, entry in original["state"].items():
        assert back["state"][index].keys() == entry.keys()
        for name, value in entry.items():
            assert torch.equal(back["state"][index][name], value), (index, name)
            assert back["state"][index][name].dtype == value.dtype


def test_adapters_torch_tensors_from_bytes_are_writable_copies():
    blob = bytes(torch_adapter.to_safetensors({"w": torch.ones(3)}))

    tensor = torch_adapter.from_safetensors(blob)["w"]
    tensor += 1

    assert torch.equal(tensor, torch.full((3,), 2.0))


def test_adapters_torch_refuses_sparse_tensors():
    sparse = torch.eye(3).to_sparse()

    with pytest.raises(InvalidInputError, match="sparse_coo tensor"):
        torch_adapter.to_safetensors({"s": sparse})


# -- tokenizers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_tokenizer() -> Tokenizer:
    """The demo's tokenizer: byte-level BPE on Python's help topics."""
    from pydoc_data.topics import topics

    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=640,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(
        [topics[key] for key in sorted(topics)], trainer=trainer
    )
    return tokenizer


SAMPLE = "<bos>def f(x):\n    return x ** 2  # naïve 🙂<eos><pad>"


def test_adapters_tokenizer_round_trip_is_exact(trained_tokenizer):
    data = to_tokenizer_data(trained_tokenizer)

    rebuilt = from_tokenizer_data(data)

    assert 512 <= len(data.token_to_id) <= 1000
    assert json.loads(rebuilt.to_str()) == json.loads(trained_tokenizer.to_str())
    assert rebuilt.encode(SAMPLE).ids == trained_tokenizer.encode(SAMPLE).ids
    assert rebuilt.decode(rebuilt.encode(SAMPLE).ids, skip_special_tokens=False) == (
        trained_tokenizer.decode(
            trained_tokenizer.encode(SAMPLE).ids, skip_special_tokens=False
        )
    )


def test_adapters_tokenizer_data_names_special_tokens_and_keeps_merge_order(
    trained_tokenizer,
):
    data = to_tokenizer_data(trained_tokenizer)
    merges = json.loads(trained_tokenizer.to_str())["model"]["merges"]

    assert data.special_tokens == {
        name.strip("<>"): trained_tokenizer.token_to_id(name) for name in SPECIAL
    }
    assert data.get_special_token_id("eos") == trained_tokenizer.token_to_id("<eos>")
    assert [list(rule) for rule in data.merge_rules] == merges
    assert all(data.id_to_token[i] == t for t, i in data.token_to_id.items())


def test_adapters_tokenizer_survives_a_store_round_trip_exactly(
    store, trained_tokenizer
):
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(tokenizer=to_tokenizer_data(trained_tokenizer))
    )

    loaded = store.load_checkpoint(checkpoint_id)

    rebuilt = from_tokenizer_data(loaded.tokenizer)
    assert rebuilt.to_str() == trained_tokenizer.to_str()


def test_adapters_tokenizer_explicit_special_token_names(trained_tokenizer):
    data = to_tokenizer_data(
        trained_tokenizer,
        special_tokens={"unk": "<unk>", "bos": "<bos>", "eos": "<eos>", "pad": "<pad>"},
    )

    assert from_tokenizer_data(data).to_str() == trained_tokenizer.to_str()
    with pytest.raises(InvalidInputError, match="special token bos='<s>' is not"):
        to_tokenizer_data(trained_tokenizer, special_tokens={"bos": "<s>"})


def test_adapters_tokenizer_with_parts_the_record_lacks_is_refused(trained_tokenizer):
    extended = Tokenizer.from_str(trained_tokenizer.to_str())
    extended.normalizer = normalizers.NFKC()

    with pytest.raises(InvalidInputError, match="tokenizer normalizer"):
        to_tokenizer_data(extended)


def test_adapters_tokenizer_of_another_model_type_is_refused():
    from tokenizers import models

    with pytest.raises(InvalidInputError, match="only BPE tokenizers"):
        to_tokenizer_data(Tokenizer(models.WordLevel({"a": 0}, unk_token="a")))


def test_adapters_tokenizer_record_of_another_type_is_refused(trained_tokenizer):
    data = to_tokenizer_data(trained_tokenizer).model_copy(
        update={"type": "SentencePiece"}
    )

    with pytest.raises(InvalidInputError, match="only 'ByteLevelBPE'"):
        from_tokenizer_data(data)


# -- Hugging Face export -----------------------------------------------------------


def test_adapters_export_writes_a_folder_hugging_face_tools_load(
    store, trained_tokenizer, tmp_path
):
    arrays = {
        "wte.weight": np.random.default_rng(1).normal(size=(640, 8)).astype(np.float32)
    }
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(
            epoch=4,
            loss=1.25,
            weights=np_adapter.to_safetensors(arrays),
            tokenizer=to_tokenizer_data(trained_tokenizer),
            hyperparameters=HyperParameters(hidden_size=8, model_type="tiny-gpt"),
        )
    )

    folder = export_huggingface(store.load_checkpoint(checkpoint_id), tmp_path / "hf")

    with safetensors.safe_open(str(folder / "model.safetensors"), "np") as opened:
        assert np.array_equal(opened.get_tensor("wte.weight"), arrays["wte.weight"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tokenizer.encode(SAMPLE).ids == trained_tokenizer.encode(SAMPLE).ids
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_size"] == 8 and config["model_type"] == "tiny-gpt"
    assert config["statecheckpoint"]["checkpoint_id"] == str(checkpoint_id)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["bos_token"] == "<bos>"
    assert tokenizer_config["pad_token"] == "<pad>"


def test_adapters_export_refuses_raw_weights_and_a_used_folder(tmp_path):
    with pytest.raises(InvalidInputError, match="weights are not safetensors"):
        export_huggingface(ModelCheckpoint(weights=b"\x00" * 64), tmp_path / "a")

    good = ModelCheckpoint(weights=np_adapter.to_safetensors({"w": np.zeros(2)}))
    export_huggingface(good, tmp_path / "b")
    with pytest.raises(InvalidInputError, match="export to an empty folder"):
        export_huggingface(good, tmp_path / "b")
    with pytest.raises(NotFoundError, match="the load returned None"):
        export_huggingface(None, tmp_path / "c")
