"""bucketfs records from Python: the key layout and JSON of the Swift `Records` module over a directory (a
bucketfs mount or any directory) or Redis. `bucketfs_records.langgraph.BucketfsSaver` is a LangGraph
checkpointer in that layout."""
from . import coding, keys
from .backends import DirectoryBackend, RedisBackend
from .records import Checkpoints, Events, Records, Sessions

__all__ = ["coding", "keys", "DirectoryBackend", "RedisBackend", "Records", "Checkpoints", "Events", "Sessions"]
