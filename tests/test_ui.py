"""The Prefect UI: a user creates a FileSystemStore block through the form.

Headless Debian Chromium, driven by Playwright, fills the block's create form of a
real ``prefect server start``; Python then loads the block by name and saves a
checkpoint through it. Screenshots of the filled form and of the created block are
kept under ``test-artifacts/`` (or ``$STATECHECKPOINT_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate

from statecheckpoint import FileSystemStore, ModelCheckpoint
from tests._prefect_server import BLOCKS, chromium_path, running_server
from tests.helpers import skip_or_fail

pytestmark = pytest.mark.slow

ARTIFACTS = Path(
    os.environ.get(
        "STATECHECKPOINT_TEST_ARTIFACTS",
        Path(__file__).resolve().parent.parent / "test-artifacts",
    )
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(what: str, fix: str) -> None:
    skip_or_fail(f"{what} is missing: {fix}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("prefect-ui")) as running:
        registered = running.prefect(
            "block", "register", "-m", "statecheckpoint.blocks"
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        yield running


def _field(page, label: str):
    """The input of a form field, found by its label's exact text."""
    labelled = f"label[normalize-space(.)='{label}']"
    xpath = (
        "//div[contains(concat(' ', @class, ' '), ' p-label ')]"
        f"[./div[contains(@class, 'p-label__header')]/{labelled}]"
        "/div[contains(@class, 'p-label__body')]//*[self::input or self::textarea]"
    )
    return page.locator(f"xpath={xpath}").first


@contextmanager
def _browser(profile: Path) -> Iterator[Any]:
    """Headless Chromium with a new, empty profile."""
    executable = chromium_path()
    if executable is None:
        _missing("chromium", "run `make install` (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright", "pip install -e '.[dev]'")

    # Playwright's sync API runs an event loop here: no Prefect calls inside.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield browser
        finally:
            browser.close()


def _create_in_ui(url: str, name: str, root: Path, profile: Path) -> None:
    """Fills and submits the FileSystemStore create form in headless Chromium."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _browser(profile) as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        slug = FileSystemStore.get_block_type_slug()
        page.goto(f"{url}/blocks/catalog/{slug}/create", wait_until="networkidle")

        # The form shows every field's description from the block class.
        for field in FileSystemStore.model_fields.values():
            assert field.description
            page.get_by_text(field.description, exact=True).wait_for()

        _field(page, "Block Name").fill(name)
        _field(page, "Root (Optional)").fill(str(root))
        page.screenshot(
            path=str(ARTIFACTS / "ui-filesystem-store-form.png"), full_page=True
        )

        page.get_by_role("button", name="Create", exact=True).click()
        page.wait_for_url("**/blocks/block/**")
        page.get_by_text(str(root)).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "ui-filesystem-store-created.png"))


def test_ui_creates_a_filesystem_store_that_python_loads_and_saves_through(
    server, tmp_path
):
    root = tmp_path / "made-in-the-ui"
    name = "ui-made-store"

    _create_in_ui(server.url, name, root, tmp_path / "chromium-profile")

    store = FileSystemStore.load(name)
    assert store.root == str(root)
    assert store.create_root and store.check_writable and store.fallback_root is None

    weights = os.urandom(4096)
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(epoch=7, weights=weights))

    assert (
        root / "models" / str(checkpoint_id) / "weights.bin"
    ).read_bytes() == weights
    loaded = FileSystemStore.load(name).load_checkpoint(checkpoint_id)
    assert loaded is not None and loaded.epoch == 7 and loaded.weights == weights


SECRET_BLOCKS = [cls for cls in BLOCKS if cls.model_json_schema().get("secret_fields")]


def _save_with_secrets(block: type[Block]) -> tuple[uuid.UUID, list[str]]:
    """Saves a block document whose secret fields hold known values."""
    secrets = [
        name for name in block.model_json_schema()["secret_fields"] if "." not in name
    ]
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug(block.get_block_type_slug())
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        document = client.create_block_document(
            BlockDocumentCreate(
                name=f"secrets-{block.get_block_type_slug()}",
                data={name: f"s3cret-{name}-value" for name in secrets},
                block_type_id=block_type.id,
                block_schema_id=schema.id,
            )
        )
    return document.id, [f"s3cret-{name}-value" for name in secrets]


def test_ui_shows_secret_fields_masked(server, tmp_path):
    saved = {block: _save_with_secrets(block) for block in SECRET_BLOCKS}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = {}

    with _browser(tmp_path / "chromium-profile") as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        for block, (document_id, _) in saved.items():
            for view in ("", "/edit"):
                page.goto(f"{server.url}/blocks/block/{document_id}{view}")
                page.get_by_text(block.get_block_type_name()).first.wait_for()
                page.wait_for_load_state("networkidle")
                pages[block, view] = page.content()
            slug = block.get_block_type_slug()
            page.screenshot(path=str(ARTIFACTS / f"ui-{slug}-edit.png"), full_page=True)

    for block, (_, values) in saved.items():
        for view in ("", "/edit"):
            html = pages[block, view]
            assert not any(value in html for value in values), (block, view)
        assert pages[block, ""].count("********") >= len(values), block.__name__
