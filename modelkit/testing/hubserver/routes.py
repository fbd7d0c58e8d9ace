"""The test Hub's route table: ``(method, path regex, function)``, first match wins."""

from __future__ import annotations

from modelkit.testing.hubserver.repos import (
    create_repo,
    model_info,
    paths_info,
    refs,
    resolve,
    tag,
    tree,
    validate_yaml,
)
from modelkit.testing.hubserver.uploads import commit, lfs_batch, lfs_put, lfs_verify, preupload

R = r"([\w.-]+/[\w.-]+)"  # ORG/NAME
ROUTES = [
    ("POST", r"/api/repos/create", create_repo),
    ("GET", rf"/api/models/{R}/refs", refs),
    ("GET", rf"/api/models/{R}(?:/revision/([^/]+))?", model_info),
    ("POST", r"/api/validate-yaml", validate_yaml),
    ("POST", rf"/api/models/{R}/preupload/([^/]+)", preupload),
    ("POST", rf"/{R}\.git/info/lfs/objects/batch", lfs_batch),
    ("PUT", r"/__lfs/([0-9a-f]{64})", lfs_put),
    ("POST", r"/__lfs/([0-9a-f]{64})/verify", lfs_verify),
    ("POST", rf"/api/models/{R}/commit/([^/]+)", commit),
    ("POST", rf"/api/models/{R}/tag/([^/]+)", tag),
    ("POST", rf"/api/models/{R}/paths-info/([^/]+)", paths_info),
    ("GET", rf"/api/models/{R}/tree/([^/]+)(/.*)?", tree),
    ("GET", rf"/{R}/resolve/([^/]+)/(.+)", resolve),
]
