"""Formatting a fresh Kafka log directory with the real Kafka tool."""

import base64
import uuid
from unittest import mock

import pytest

from ops.stack import services

pytestmark = pytest.mark.integration


def test_a_cluster_id_that_starts_with_a_dash_formats(live_settings, tmp_path):
    fixed = uuid.UUID(bytes=b"\xf8" + b"\x01" * 15)  # base64 "-AEB...": 1 fresh stack in 64 drew such an id
    assert base64.urlsafe_b64encode(fixed.bytes).decode().startswith("-")
    settings = live_settings.replace(home=str(tmp_path))
    with mock.patch("uuid.uuid4", return_value=fixed):
        services.kafka(settings).setup()  # raised ServiceError: "argument --cluster-id/-t: expected one argument"
    assert "cluster.id=-AEBAQEBAQEBAQEBAQEBAQ" in (tmp_path / "kafka" / "data" / "meta.properties").read_text()
