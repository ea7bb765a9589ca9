# moto_server with two changes for tests: an object whose key contains `aged<N>h` reports a
# LastModified N hours in the past (S3 offers no way to set it), and `POST /_test/fill?bucket=B&
# prefix=P&n=N` stores N one-byte objects `P filler-00000.bin …` in moto's own S3 backend at once
# (10 000 PutObject requests take ~100 s on a busy machine; this takes well under a second).
# Started by tests/it/support/moto.rs.
import datetime, re, sys
from urllib.parse import parse_qs
from moto.s3 import models
_init = models.FakeKey.__init__
def _aged_init(self, name, *args, **kwargs):
    _init(self, name, *args, **kwargs)
    m = re.search(r"aged(\d+)h", name)
    if m:
        self.last_modified = self.last_modified - datetime.timedelta(hours=int(m.group(1)))
models.FakeKey.__init__ = _aged_init

def _with_fill(app):
    def serve(environ, start_response):
        if environ.get("PATH_INFO") != "/_test/fill":
            return app(environ, start_response)
        from moto.core import DEFAULT_ACCOUNT_ID
        q = parse_qs(environ.get("QUERY_STRING", ""))
        bucket, prefix, n = q["bucket"][0], q["prefix"][0], int(q["n"][0])
        backend = models.s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for i in range(n):
            backend.put_object(bucket, f"{prefix}filler-{i:05}.bin", b"x")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(n).encode()]
    return serve

import moto.server as server
_run_simple = server.run_simple
server.run_simple = lambda host, port, app, *a, **kw: _run_simple(host, port, _with_fill(app), *a, **kw)
server.main(sys.argv[1:])
