"""The API key lives in the OS keyring, never in a plain file."""

from __future__ import annotations

import keyring
import pytest
from keyring.backend import KeyringBackend

from desklm.errors import DeskLMError
from desklm.server import keys


class MemoryKeyring(KeyringBackend):
    """Stands in for the OS keyring (this machine has none: no Secret Service, no KWallet)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        del self.items[(service, username)]


@pytest.fixture
def memory_keyring():
    before = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(before)


def test_a_key_is_generated_once_and_kept(memory_keyring) -> None:
    key = keys.get_or_create_key()
    assert len(key) >= 40 and key == keys.get_or_create_key()
    assert memory_keyring.items == {(keys.SERVICE, keys.USERNAME): key}
    assert keys.load_key() == key  # kept: the next start serves with the same key


def test_a_plaintext_or_missing_keyring_is_refused() -> None:
    from keyring.backends import fail

    before = keyring.get_keyring()
    try:
        keyring.set_keyring(fail.Keyring())
        with pytest.raises(DeskLMError, match=r"no secure OS keyring.*--api-key-env"):
            keys.get_or_create_key()
        try:
            from keyrings.alt.file import PlaintextKeyring
        except ImportError:
            return
        keyring.set_keyring(PlaintextKeyring())
        with pytest.raises(DeskLMError, match="no secure OS keyring"):
            keys.store_key("x" * 20)
    finally:
        keyring.set_keyring(before)
