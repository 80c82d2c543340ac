"""The Hub's HTTP API, as the loopback Hub answers it: routes, JSON and headers.

Response shapes follow what `huggingface_hub` 2.4 parses (hf_api.py,
file_download.py, utils/_http.py): error codes travel in `X-Error-Code`, file
metadata in `X-Repo-Commit`, `ETag`, `X-Linked-Etag` and `X-Linked-Size`.
Refusals (tokens, unknown repos, gated files) are answered as access.py's rules say.
The write endpoints (repo and branch creation, preupload, commit) are in upload.py;
route() dispatches to them. Repos are read through the RepoStore's public interface.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, quote, unquote

from . import upload
from .access import AccessRules
from .git import Entry
from .repos import Repo, RepoStore
from .responses import ErrorResponse, Response, json_response

_API_TYPES = {"models": "model", "kernels": "kernel"}


def _iso(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


# -- routing -------------------------------------------------------------------

def route(store: RepoStore, base_url: str, method: str, path: str, query: str, form: bytes, *,
          access: AccessRules | None = None, authorization: str | None = None) -> Response:
    """Answer one request (`path` still URL-quoted, `form` the request body) from `store`.

    `base_url` is the hub's own address, for links in answers; `access` the refusal rules
    (None: the Hub's defaults) and `authorization` the request's Authorization header.
    Returns the answer; raises ErrorResponse for what the Hub answers with an error
    (404 for unknown routes).
    """
    access = access or _OPEN
    access.check_token(authorization)
    segs = path.split("/")[1:]
    params = parse_qs(query)
    asker = _Asker(access, authorization, base_url)
    if segs[:1] == ["api"]:
        return _route_api(store, base_url, method, segs[1:], params, form, asker)
    if method in ("GET", "HEAD"):
        if len(segs) >= 5 and segs[2] == "resolve":
            return _resolve_file(store, asker, "model", segs[:2], segs[3], segs[4:])
        if len(segs) >= 6 and segs[0] == "kernels" and segs[3] == "resolve":
            return _resolve_file(store, asker, "kernel", segs[1:3], segs[4], segs[5:])
    raise ErrorResponse(404, None, f"no route for {method} {path}")


_OPEN = AccessRules()  # never changed: the Hub's own answers, for callers that give no rules


class _Asker:
    """Who is asking (their Authorization header) and the rules that answer them."""

    def __init__(self, access: AccessRules, authorization: str | None, base_url: str):
        self.access, self.authorization, self.base_url = access, authorization, base_url

    def lookup(self, store: RepoStore, repo_type: str, repo_id: str) -> Repo:
        """The repo; raises the rules' answer for a repo this hub does not hold."""
        repo = store.lookup(repo_type, repo_id)
        if repo is None:
            raise self.access.unknown_repo(repo_type, repo_id, self.authorization)
        return repo


def _route_api(store: RepoStore, base_url: str, method: str, segs: list[str], params: dict,
               form: bytes, asker: _Asker) -> Response:
    if segs == ["agent-harnesses"]:
        return json_response({"standardEnvVars": [], "harnesses": {}})
    if len(segs) == 3 and segs[0] == "organizations" and segs[2] == "overview":
        org = unquote(segs[1])
        # The public `kernels` package refuses untrusted publishers unless told to trust them.
        return json_response({"name": org, "fullname": org, "avatarUrl": "", "type": "org",
                              "isVerified": False, "isFollowing": False, "trustedKernelPublisher": True})
    if method == "POST" and segs in (["repos", "create"], ["validate-yaml"]):
        return upload.route_top(store, base_url, segs[-1], form)
    if len(segs) < 3 or segs[0] not in _API_TYPES:
        raise ErrorResponse(404, None, f"no API route /api/{'/'.join(segs)}")
    repo_type, repo_id, rest = _API_TYPES[segs[0]], f"{unquote(segs[1])}/{unquote(segs[2])}", segs[3:]
    repo = asker.lookup(store, repo_type, repo_id)
    gated = asker.access.is_gated(repo_type, repo_id)
    action, rev = (rest[0] if rest else ""), unquote("/".join(rest[1:2]))
    if method == "GET" and action == "":
        return _repo_info(store, repo, "main", params, gated)
    if method == "GET" and action == "revision" and len(rest) >= 2:
        return _repo_info(store, repo, unquote("/".join(rest[1:])), params, gated)
    if method == "GET" and action == "refs":
        return _refs(store, repo, params)
    if method == "GET" and action == "tree" and len(rest) >= 2:
        return _tree(store, repo, rev, unquote("/".join(rest[2:])), params, base_url + "/api/" + "/".join(segs))
    if method == "GET" and action == "commits" and len(rest) == 2:
        return _commits(store, repo, rev, params)
    if method == "POST" and action == "paths-info" and len(rest) == 2:
        return _paths_info(store, repo, rev, parse_qs(form.decode(errors="replace")))
    if method == "POST" and action in ("branch", "preupload", "commit") and len(rest) == 2:
        return upload.route_repo(store, base_url, repo, action, rev, params, form)
    raise ErrorResponse(404, None, f"no API route {method} /api/{'/'.join(segs)}")


def _commit_for(store: RepoStore, repo: Repo, rev: str) -> str:
    sha = store.resolve(repo, rev)
    if sha is None:
        raise ErrorResponse(404, "RevisionNotFound", f"Invalid rev id: {rev}")
    return sha


def _flag(params: dict, name: str) -> bool:
    return params.get(name, ["false"])[-1].lower() in ("1", "true")


# -- API endpoints -------------------------------------------------------------

def _repo_info(store: RepoStore, repo: Repo, rev: str, params: dict, gated: bool) -> Response:
    sha = _commit_for(store, repo, rev)
    snap, log = store.snapshot(repo, sha), store.history(repo, sha)
    blobs = _flag(params, "blobs")
    siblings = [_sibling(e, blobs) for e in snap.entries.values() if e.kind == "file"]
    org = repo.repo_id.split("/")[0]
    info = {"_id": sha[:24], "id": repo.repo_id, "author": org, "sha": sha, "private": False,
            "disabled": False, "gated": "manual" if gated else False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": _iso(log[0].timestamp), "createdAt": _iso(log[-1].timestamp),
            "siblings": sorted(siblings, key=lambda s: s["rfilename"])}
    if repo.repo_type == "model":
        info["modelId"] = repo.repo_id
    return json_response(info)


def _sibling(entry: Entry, blobs: bool) -> dict:
    sibling = {"rfilename": entry.path}
    if blobs:
        sibling.update(size=entry.size, blobId=entry.oid)
        if entry.lfs is not None:
            sibling["lfs"] = {"sha256": entry.lfs.sha256, "size": entry.lfs.size,
                              "pointerSize": entry.lfs.pointer_size}
    return sibling


def _refs(store: RepoStore, repo: Repo, params: dict) -> Response:
    refs = store.refs(repo)

    def listing(prefix: str) -> list[dict]:
        return [{"name": ref[len(prefix):], "ref": ref, "targetCommit": sha}
                for ref, sha in sorted(refs.items()) if ref.startswith(prefix)]

    body = {"branches": listing("refs/heads/"), "tags": listing("refs/tags/"), "converts": []}
    if _flag(params, "include_prs"):  # as on the Hub: pull request refs only when asked for
        body["pullRequests"] = listing("refs/pr/")
    return json_response(body)


def _entry_json(entry: Entry) -> dict:
    out = {"type": entry.kind, "oid": entry.oid, "size": entry.size, "path": entry.path}
    if entry.lfs is not None:
        out["lfs"] = {"oid": entry.lfs.sha256, "size": entry.lfs.size, "pointerSize": entry.lfs.pointer_size}
    return out


def _tree(store: RepoStore, repo: Repo, rev: str, path: str, params: dict, api_path: str) -> Response:
    sha = _commit_for(store, repo, rev)
    snap = store.snapshot(repo, sha)
    path = path.strip("/")
    if path and (path not in snap.entries or snap.entries[path].kind != "directory"):
        # A file path is an error too; HfFileSystem relies on that to tell files from folders.
        raise ErrorResponse(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
    entries = [_entry_json(e) for e in snap.walk(path, _flag(params, "recursive"))]
    return _paginate(entries, params, api_path)


def _paginate(entries: list[dict], params: dict, api_path: str) -> Response:
    """One page unless the caller sends `limit`; then a GitHub-style Link header, as the Hub does."""
    if "limit" not in params:
        return json_response(entries)
    limit, start = max(1, int(params["limit"][-1])), int(params.get("cursor", ["0"])[-1])
    resp = json_response(entries[start:start + limit])
    if start + limit < len(entries):
        keep = {k: v[-1] for k, v in params.items() if k != "cursor"}
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in keep.items())
        resp.headers["Link"] = f'<{api_path}?{query}&cursor={start + limit}>; rel="next"'
    return resp


def _commits(store: RepoStore, repo: Repo, rev: str, params: dict) -> Response:
    sha = _commit_for(store, repo, rev)
    formatted = "formatted" in params.get("expand[]", [])
    out = []
    for c in store.history(repo, sha):
        item = {"id": c.oid, "title": c.title, "message": c.message,
                "authors": [{"user": c.author, "avatar": None}], "date": _iso(c.timestamp)}
        if formatted:
            item["formatted"] = {"title": c.title, "message": c.message}
        out.append(item)
    return json_response(out)


def _paths_info(store: RepoStore, repo: Repo, rev: str, form: dict) -> Response:
    snap = store.snapshot(repo, _commit_for(store, repo, rev))
    paths = [p.strip("/") for p in form.get("paths", [])]
    return json_response([_entry_json(snap.entries[p]) for p in paths if p in snap.entries])


# -- file downloads ------------------------------------------------------------

def _resolve_file(store: RepoStore, asker: _Asker, repo_type: str, owner: list[str], rev: str,
                  path: list[str]) -> Response:
    repo_id = "/".join(unquote(s) for s in owner)
    repo = asker.lookup(store, repo_type, repo_id)
    asker.access.check_download(repo_type, repo_id, asker.authorization, asker.base_url)
    rev, filename = unquote(rev), unquote("/".join(path))
    sha = _commit_for(store, repo, rev)
    snap = store.snapshot(repo, sha)
    entry = snap.entries.get(filename)
    if entry is None or entry.kind != "file":
        raise ErrorResponse(404, "EntryNotFound", f"{filename} does not exist on {rev}", {"X-Repo-Commit": sha})
    headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    if entry.lfs is None:
        headers["ETag"] = f'"{entry.oid}"'
    else:
        etag = f'"{entry.lfs.sha256}"'
        headers.update({"ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(entry.lfs.size)})
    return Response(200, store.content(repo, snap, filename), headers)
