"""TLS verification switch, connection liveness and masked settings: no sockets."""

from __future__ import annotations

import aiormq

from rabbitflow.amqp.connection import is_open, without_verification
from rabbitflow.settings import Settings
from rabbitflow.worker.consumer import channel_close_reason


def test_without_verification_only_touches_amqps_urls() -> None:
    assert without_verification("amqp://h/") == "amqp://h/"
    assert without_verification("amqps://u:p@h:5671/v?heartbeat=5") == (
        "amqps://u:p@h:5671/v?heartbeat=5&no_verify_ssl=1"
    )


def test_verification_is_on_unless_turned_off() -> None:
    assert Settings().tls_verify is True
    assert Settings(tls_verify=False).tls_verify is False


def test_no_connection_is_not_open() -> None:
    assert is_open(None) is False


def test_settings_repr_masks_passwords() -> None:
    s = Settings(
        url="amqp://u:hunter2@a/,amqp://u:hunter2@b/", management_url="http://u:hunter2@a:15672"
    )
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "u:***@a" in repr(s)


def test_consumer_timeout_closure_is_explained() -> None:
    exc = aiormq.exceptions.ChannelPreconditionFailed(
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. "
        "Timeout value used: 4000 ms."
    )
    assert "consumer_timeout" in channel_close_reason(exc)
    other = aiormq.exceptions.ChannelPreconditionFailed("PRECONDITION_FAILED - other")
    assert channel_close_reason(other) == "PRECONDITION_FAILED - other"
