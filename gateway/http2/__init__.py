"""HTTP/2 on the gateway's port: each stream becomes an aiohttp request served by the same app.

aiohttp has no HTTP/2 server. Rather than move the gateway to another framework (and rewrite every
handler and middleware), this module speaks HTTP/2 with the sans-I/O ``h2`` library (it parses and
builds frames; we own the socket) and turns each stream into an aiohttp ``web.Request`` made by the
app's own request factory and handed to the app's own handler: the same routes, the same
middleware chain (SigV4, AWS error shapes, body limits). ``gateway.server`` decides per connection
which protocol it speaks (the h2 preface on plain TCP, ALPN on TLS).

How a stream looks to the app:

- it presents as HTTP/1.1 (aiohttp's response code knows only 1.x), and the hop-by-hop headers
  that code adds (Connection, Transfer-Encoding) are dropped, as HTTP/2 forbids them;
- ``:authority`` stays as a header (the AWS SDKs sign it instead of Host over HTTP/2) and is copied
  to ``Host`` when the client sent none;
- the body is an aiohttp ``StreamReader`` fed from DATA frames; the client's flow-control window is
  given back only while the reader keeps up, so a slow handler throttles its producer (PutMedia);
- the response is written by ``Http2StreamWriter``: write() sends DATA frames as the client's
  window allows and waits when it is spent, so a GetMedia or event stream never holds more than
  one window in memory;
- ``request.transport`` is the stream: ``close()`` resets that stream, not the whole connection.

Per-connection limits (from ``[server]``): SETTINGS_MAX_CONCURRENT_STREAMS and
SETTINGS_MAX_HEADER_LIST_SIZE; more than ``max_headers`` fields, or one longer than
``max_header_bytes``, gets an AWS-shaped 400 on that stream; a connection with no open stream for
``header_timeout_seconds`` gets GOAWAY; a response whose window stays shut for
``write_stall_seconds`` is reset; a client that resets too many streams (the "rapid reset"
attack) or sends too many frames that only make work (PING, SETTINGS, PRIORITY, empty DATA) in
``FLOOD_WINDOW_SECONDS`` gets GOAWAY ENHANCE_YOUR_CALM; any frame h2 rejects gets GOAWAY
PROTOCOL_ERROR; either way the connection closes. While the client does not read what we send,
we read nothing more from it. Body size and time limits are the app's own middleware, as for
HTTP/1.1.
"""

from gateway.http2.connection import PREFACE, Http2Connection, Http2Server
from gateway.http2.upgrade import SWITCHING_PROTOCOLS, H2cUpgrade, h2c_upgrade

__all__ = ["H2cUpgrade", "Http2Connection", "Http2Server", "PREFACE", "SWITCHING_PROTOCOLS", "h2c_upgrade"]
