"""The API key: generated with ``secrets``, kept in the OS keyring, never in settings or logs.

A keyring that stores secrets in a plain file (``keyrings.alt``'s plaintext backends) or no
keyring at all is refused with a one-line reason: the user can pass a key another way
(``desklm serve --api-key-env VAR``).
"""

from __future__ import annotations

import secrets

from desklm.errors import DeskLMError

SERVICE = "desklm"
USERNAME = "api-server-key"
NO_KEYRING = (
    "no secure OS keyring is available to keep the API key (on Linux: GNOME Keyring "
    "or KWallet; on macOS and Windows it is built in); pass a key with "
    "--api-key-env VAR instead"
)


def new_key() -> str:
    """A fresh random key (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def _backend():  # type: ignore[no-untyped-def]
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        raise DeskLMError(NO_KEYRING) from None
    kr = keyring.get_keyring()
    name = f"{type(kr).__module__}.{type(kr).__name__}"
    insecure = isinstance(kr, fail.Keyring) or name.startswith(
        ("keyrings.alt", "keyring.backends.null")
    )
    if not insecure and hasattr(kr, "backends"):  # a chainer: every link must be secure
        links = [f"{type(b).__module__}" for b in kr.backends]
        insecure = not links or any(m.startswith("keyrings.alt") for m in links)
    if insecure or getattr(kr, "priority", 1) <= 0:
        raise DeskLMError(NO_KEYRING)
    return kr


def load_key() -> str | None:
    """The stored key, or None when none was stored yet."""
    kr = _backend()
    try:
        return kr.get_password(SERVICE, USERNAME) or None
    except Exception as e:  # a locked or broken keyring
        raise DeskLMError(f"could not read the API key from the keyring: {e}") from None


def store_key(key: str) -> None:
    kr = _backend()
    try:
        kr.set_password(SERVICE, USERNAME, key)
    except Exception as e:
        raise DeskLMError(f"could not store the API key in the keyring: {e}") from None


def get_or_create_key() -> str:
    """The stored key, or a new one stored now (first use)."""
    key = load_key()
    if key is None:
        key = new_key()
        store_key(key)
    return key
