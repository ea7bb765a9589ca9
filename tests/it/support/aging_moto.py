# moto_server with one change for tests: an object whose key contains `aged<N>h` reports a
# LastModified N hours in the past (S3 offers no way to set it). Started by tests/support/moto.rs.
import datetime, re, sys
from moto.s3 import models
_init = models.FakeKey.__init__
def _aged_init(self, name, *args, **kwargs):
    _init(self, name, *args, **kwargs)
    m = re.search(r"aged(\d+)h", name)
    if m:
        self.last_modified = self.last_modified - datetime.timedelta(hours=int(m.group(1)))
models.FakeKey.__init__ = _aged_init
from moto.server import main
main(sys.argv[1:])
