"""The test Hub's route table: ``(method, path regex, function)``, first match wins."""

from __future__ import annotations

from modelkit.testing.hubserver import repos, uploads

R = r"([\w.-]+/[\w.-]+)"  # ORG/NAME
ROUTES = [
    ("POST", r"/api/repos/create", repos.create_repo),
    ("GET", rf"/api/models/{R}/refs", repos.refs),
    ("GET", rf"/api/models/{R}(?:/revision/([^/]+))?", repos.model_info),
    ("POST", r"/api/validate-yaml", repos.validate_yaml),
    ("POST", rf"/api/models/{R}/preupload/([^/]+)", uploads.preupload),
    ("POST", rf"/{R}\.git/info/lfs/objects/batch", uploads.lfs_batch),
    ("PUT", r"/__lfs/([0-9a-f]{64})", uploads.lfs_put),
    ("POST", r"/__lfs/([0-9a-f]{64})/verify", uploads.lfs_verify),
    ("POST", rf"/api/models/{R}/commit/([^/]+)", uploads.commit),
    ("POST", rf"/api/models/{R}/tag/([^/]+)", repos.tag),
    ("POST", rf"/api/models/{R}/paths-info/([^/]+)", repos.paths_info),
    ("GET", rf"/api/models/{R}/tree/([^/]+)(/.*)?", repos.tree),
    ("GET", rf"/{R}/resolve/([^/]+)/(.+)", repos.resolve),
]
