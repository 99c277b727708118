"""Path or URI: the one test every package uses to tell them apart.

A URI (`s3://bucket/x?endpoint_override=...`, `gs://...`, `file:///...`, `sqlite:///...`,
`http://host:5000`) names its scheme; anything else is a path on this machine. Callers that
open files hand a URI to pyarrow.fs (or MLflow) and a path to the local filesystem.
"""


def is_uri(path: str) -> bool:
    return "://" in path
