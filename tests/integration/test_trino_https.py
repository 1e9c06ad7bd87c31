"""QUESTLOG_TRINO_URL with https and a user reaches a real Trino over TLS.

The test stack's Trino speaks plain HTTP; a TLS-terminating proxy in front of it (a certificate
from a throw-away CA, trusted through REQUESTS_CA_BUNDLE) stands in for a cluster's HTTPS endpoint.
Trino builds the next URIs of a query from the Host header it is sent, so the proxy rewrites them
to https, as a cluster's load balancer (with forwarded headers) would.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import trustme
from trino.exceptions import TrinoConnectionError

from questlog.settings import join_address
from questlog.sql import execute

pytestmark = pytest.mark.integration


def tls_proxy(target_host: str, target_port: int, context: ssl.SSLContext) -> ThreadingHTTPServer:
    class Proxy(BaseHTTPRequestHandler):
        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            upstream = http.client.HTTPConnection(target_host, target_port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "accept-encoding")}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read().replace(
                f"http://{self.headers['Host']}".encode(), f"https://{self.headers['Host']}".encode()
            )
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

        do_GET = do_POST = do_DELETE = do_PUT = forward

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def https_trino(live_settings, tmp_path_factory):
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = tls_proxy(live_settings.trino_host, live_settings.trino_port, context)
    yield f"127.0.0.1:{server.server_address[1]}", str(bundle)
    server.shutdown()


def test_https_url_with_a_user(live_settings, https_trino, monkeypatch):
    address, bundle = https_trino
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    settings = live_settings.replace(trino_url=f"https://analyst%2B1@{address}")
    assert (settings.trino_scheme, settings.trino_port) == ("https", int(address.rsplit(":", 1)[1]))
    columns, rows = execute(settings, "SELECT current_user, 40 + 2")
    assert rows == [["analyst+1", 42]]


def test_https_is_really_tls(live_settings, https_trino, monkeypatch):
    """Without the CA the certificate is refused: the connection did go through TLS."""
    address, _ = https_trino
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises((requests.exceptions.SSLError, TrinoConnectionError)) as error:
        execute(live_settings.replace(trino_url=f"https://{address}"), "SELECT 1")
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value)


def test_plain_http_is_unchanged(live_settings):
    assert live_settings.trino_scheme == "http"
    assert execute(live_settings, "SELECT current_user")[1] == [[live_settings.trino_user]]
    assert join_address(live_settings.trino_host, live_settings.trino_port) in live_settings.trino_url
