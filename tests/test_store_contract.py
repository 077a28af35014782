"""The contract every store backend must keep; runs unchanged on each backend."""

from __future__ import annotations

import math
import struct
import uuid

import pytest

from statecheckpoint import (
    HyperParameters,
    InferenceSession,
    InvalidInputError,
    MergeRule,
    ModelCheckpoint,
    SamplingConfig,
    TokenizerData,
)

AWKWARD_STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "\udfff lone low",
    "é\u0301 combining",
    "🙂",
    "a\nb\tc\r",
    '"quoted" \\ back',
    "'; DROP TABLE models; --",
    "../../etc/passwd",
    "\u2028\u2029",
    "Ġhello",
    "x" * 5000,
]
AWKWARD_FLOATS = [
    0.0,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    5e-324,
    1.7976931348623157e308,
    0.1 + 0.2,
    -1.0 / 3.0,
]


def _bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack("<d", value)


def _tokenizer() -> TokenizerData:
    token_to_id = {text: index for index, text in enumerate(AWKWARD_STRINGS)}
    return TokenizerData(
        type="ByteLevelBPE",
        token_to_id=token_to_id,
        id_to_token={index: text for text, index in token_to_id.items()},
        merge_rules=[
            MergeRule("\ud800", "é"),
            MergeRule("Ġ", "hello"),
            MergeRule("", ""),
        ],
        special_tokens={"bos": 0, "eos": 1, "pad": 2, "unk": 3, "\x00": 4},
    )


@pytest.mark.parametrize("loss", AWKWARD_FLOATS, ids=repr)
def test_checkpoint_round_trip_is_exact(store, loss):
    weights = bytes(range(256)) * 17
    optimizer = bytearray(b"\x00\xff" * 1000)
    checkpoint = ModelCheckpoint(
        epoch=7,
        loss=loss,
        weights=weights,
        optimizer_state=optimizer,
        tokenizer=_tokenizer(),
        hyperparameters=HyperParameters(
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            learning_rate=loss,
            schedule={"warmup": [1, 2.5, None, True], "name": "\ud800"},
            big=2**80,
            tiny=5e-324,
        ),
        tags={"run": "a", "\ud800": "\x00", "'; --": "../x"},
    )

    checkpoint_id = store.save_checkpoint(checkpoint)
    loaded = store.load_checkpoint(checkpoint_id)

    assert isinstance(checkpoint_id, uuid.UUID)
    assert loaded.id == checkpoint_id
    assert bytes(loaded.weights) == weights
    assert bytes(loaded.optimizer_state) == bytes(optimizer)
    assert isinstance(loaded.weights, bytearray)
    assert _bits(loaded.loss) == _bits(loss)
    assert _bits(loaded.hyperparameters.learning_rate) == _bits(loss)
    assert loaded.tokenizer == checkpoint.tokenizer
    assert loaded.tokenizer.get_special_token_id("eos") == 1
    assert loaded.tokenizer.merge_rules[0] == MergeRule("\ud800", "é")
    extras = loaded.hyperparameters.model_extra
    assert extras["schedule"] == {"warmup": [1, 2.5, None, True], "name": "\ud800"}
    assert extras["big"] == 2**80 and type(extras["big"]) is int
    assert extras["tiny"] == 5e-324
    assert loaded.tags == checkpoint.tags
    assert loaded.epoch == 7
    assert loaded.created_at is not None and loaded.created_at.tzinfo is not None


@pytest.mark.parametrize("text", AWKWARD_STRINGS, ids=range(len(AWKWARD_STRINGS)))
def test_session_round_trip_is_exact(store, text):
    kv = bytearray(b"kv" * 3000)
    session = InferenceSession(
        kv_cache=kv,
        token_history=[0, 1, 2**31 - 1, -1, 50256],
        sampling=SamplingConfig(
            temperature=float("nan"), top_p=-0.0, top_k=40, seed=2**63, max_new_tokens=5
        ),
        model_fingerprint=text,
        tags={"user": text or "empty"},
    )

    session_id = store.save_session(session)
    loaded = store.load_session(session_id)

    assert bytes(loaded.kv_cache) == bytes(kv)
    assert loaded.token_history == session.token_history
    assert loaded.model_fingerprint == text
    assert loaded.tags == session.tags
    assert math.isnan(loaded.sampling.temperature)
    assert _bits(loaded.sampling.top_p) == _bits(-0.0)
    assert loaded.sampling.seed == 2**63


def test_empty_blobs_round_trip(store):
    checkpoint_id = store.save_checkpoint(ModelCheckpoint())

    loaded = store.load_checkpoint(checkpoint_id)

    assert bytes(loaded.weights) == b"" and bytes(loaded.optimizer_state) == b""
    assert loaded.tokenizer is None and loaded.hyperparameters is None


def test_numpy_and_memoryview_blobs_are_stored_as_their_bytes(store):
    np = pytest.importorskip("numpy")
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)

    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(weights=array, optimizer_state=memoryview(array.tobytes()))
    )
    loaded = store.load_checkpoint(checkpoint_id)

    restored = np.frombuffer(loaded.weights, dtype=np.float32).reshape(10, 100)
    assert np.array_equal(restored, array)
    assert bytes(loaded.optimizer_state) == array.tobytes()


def test_list_filters_by_tag_and_orders_newest_first(store):
    first = store.save_checkpoint(ModelCheckpoint(epoch=1, tags={"run": "a"}))
    second = store.save_checkpoint(ModelCheckpoint(epoch=2, tags={"run": "b"}))
    third = store.save_checkpoint(ModelCheckpoint(epoch=3, tags={"run": "a", "k": "v"}))

    everything = store.list_checkpoints()
    run_a = store.list_checkpoints(("run", "a"))

    assert [info.id for info in everything] == [third, second, first]
    assert [info.id for info in run_a] == [third, first]
    assert [info.epoch for info in run_a] == [3, 1]
    assert store.list_checkpoints(("run", "missing")) == []
    assert store.list_checkpoints(("k", "v"))[0].id == third
    assert store.list_sessions() == []


def test_list_reports_sizes_and_session_details(store):
    session_id = store.save_session(
        InferenceSession(kv_cache=b"x" * 10, token_history=[1, 2, 3], tags={"u": "1"})
    )

    (info,) = store.list_sessions(("u", "1"))

    assert info.id == session_id
    assert info.num_tokens == 3
    assert info.sizes == {"kv_cache": 10}
    assert store.list_checkpoints() == []


def test_overwrite_by_existing_id_replaces_the_whole_record(store):
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(epoch=1, weights=b"old" * 100, tags={"v": "1"})
    )

    again = store.save_checkpoint(
        ModelCheckpoint(epoch=2, weights=b"new", tags={"v": "2"}),
        existing_id=checkpoint_id,
    )
    loaded = store.load_checkpoint(str(checkpoint_id))

    assert again == checkpoint_id
    assert bytes(loaded.weights) == b"new" and loaded.epoch == 2
    assert [info.id for info in store.list_checkpoints()] == [checkpoint_id]
    assert store.list_checkpoints(("v", "1")) == []


def test_delete_removes_record_and_reports_absence(store):
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w"))
    session_id = store.save_session(InferenceSession(kv_cache=b"kv"))

    assert store.delete_checkpoint(checkpoint_id) is True
    assert store.delete_checkpoint(checkpoint_id) is False
    assert store.load_checkpoint(checkpoint_id) is None
    assert store.list_checkpoints() == []
    assert store.delete_session(session_id) is True
    assert store.load_session(session_id) is None


def test_load_of_unknown_id_returns_none(store):
    assert store.load_checkpoint(uuid.uuid4()) is None
    assert store.load_session(uuid.uuid4()) is None


def test_domains_do_not_share_ids(store):
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w"))

    assert store.load_session(checkpoint_id) is None


@pytest.mark.parametrize(
    "bad_id",
    ["", "not-a-uuid", "../../etc", "1; DROP TABLE x", 42, None, b"\x00" * 16, "{" * 3],
    ids=repr,
)
def test_invalid_ids_are_refused_before_any_io(store, monkeypatch, bad_id):
    def no_io(*args, **kwargs):
        raise AssertionError("storage was touched")

    for name in ("_write_record", "_read_record", "_delete_record", "_list_summaries"):
        monkeypatch.setattr(type(store), name, no_io)

    for call in (store.load_checkpoint, store.delete_checkpoint, store.load_session):
        if bad_id is None and call is not store.delete_checkpoint:
            continue
        with pytest.raises(InvalidInputError, match="invalid id"):
            call(bad_id)
    if bad_id is not None:
        with pytest.raises(InvalidInputError, match="invalid id"):
            store.save_checkpoint(ModelCheckpoint(), existing_id=bad_id)


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"pair": (1, 2)}, "hyperparameters.pair"),
        ({"keys": {1: "a"}}, "hyperparameters.keys"),
        ({"obj": object()}, "hyperparameters.obj"),
        ({"items": {1, 2}}, "hyperparameters.items"),
    ],
)
def test_hyperparameters_that_cannot_round_trip_are_refused(
    store, monkeypatch, hyperparameters, field
):
    monkeypatch.setattr(type(store), "_write_record", lambda *a: pytest.fail("wrote"))

    with pytest.raises(InvalidInputError, match=field):
        store.save_checkpoint(
            ModelCheckpoint(hyperparameters=HyperParameters(**hyperparameters))
        )


def test_non_buffer_blob_is_refused():
    with pytest.raises(ValueError, match="weights|blob"):
        ModelCheckpoint(weights=[1, 2, 3])


async def test_async_twins_round_trip(store):
    checkpoint_id = await store.asave_checkpoint(ModelCheckpoint(weights=b"async"))
    session_id = await store.asave_session(InferenceSession(kv_cache=b"kv"))

    loaded = await store.aload_checkpoint(checkpoint_id)
    infos = await store.alist_checkpoints()

    assert bytes(loaded.weights) == b"async"
    assert [info.id for info in infos] == [checkpoint_id]
    assert bytes((await store.aload_session(session_id)).kv_cache) == b"kv"
    assert len(await store.alist_sessions()) == 1
    assert await store.adelete_checkpoint(checkpoint_id) is True
    assert await store.adelete_session(session_id) is True


@pytest.mark.parametrize(
    "tag", ["ab", "run=x", ("a", "b", "c"), {"run": "a"}, ("a", 1)]
)
def test_a_tag_filter_of_the_wrong_shape_is_refused(store, tag):
    with pytest.raises(InvalidInputError, match="tag filter"):
        store.list_checkpoints(tag)


def test_records_refuse_unknown_fields_and_object_arrays():
    np = pytest.importorskip("numpy")

    with pytest.raises(ValueError, match="wieghts"):
        ModelCheckpoint(wieghts=b"x")
    with pytest.raises(ValueError, match="Python objects"):
        ModelCheckpoint(weights=np.array([object()]))


def test_a_record_of_the_other_domain_is_refused(store):
    with pytest.raises(InvalidInputError, match="expected InferenceSession"):
        store.save_session(ModelCheckpoint())


def test_repr_leaves_blobs_out():
    text = repr(InferenceSession(kv_cache=bytearray(1_000_000), token_history=[1]))

    assert len(text) < 200 and "token_history=[1]" in text
