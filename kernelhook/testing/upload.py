"""The loopback Hub's write endpoints: what `HfApi.create_repo`, `create_branch` and `upload_folder` send.

    POST /api/repos/create                          a repo, with the Hub's initial `.gitattributes` commit
    POST /api/validate-yaml                         README metadata check, asked before a README.md goes up
    POST /api/{type}s/{org}/{name}/branch/{branch}  a branch from `startingPoint` (default: main's head)
    POST /api/{type}s/{org}/{name}/preupload/{rev}  how each file travels: always inline ("regular")
    POST /api/{type}s/{org}/{name}/commit/{rev}     the NDJSON commit, made a real git commit

Preupload answers "regular" for every file, so contents come base64 inside the commit and
neither the LFS batch API nor hf_xet (which huggingface_hub uses for every "lfs" file when it
is installed) is ever engaged; the commit then stores *.so / *.bin through LFS as
`RepoStore.commit` always does. Pull requests are not supported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from .git import Snapshot
from .repos import DEFAULT_LFS_PATTERNS, REPO_TYPES, Repo, RepoStore
from .responses import ErrorResponse, Response, json_response

# What the new repo's first commit holds: the patterns this hub really stores through LFS.
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS)


def route_top(store: RepoStore, base_url: str, what: str, body: bytes) -> Response:
    """POST /api/repos/create and /api/validate-yaml: returns the answer (409 for an existing repo).

    Raises ErrorResponse (400) for a body that is not a JSON object, an unknown type or a malformed id.
    """
    if what == "validate-yaml":
        # Any metadata is fine here; the client reads warnings and errors from a JSON body.
        return json_response({"errors": [], "warnings": []})
    return _create_repo(store, base_url, _json(body))


def route_repo(store: RepoStore, base_url: str, repo: Repo, action: str, rev: str, params: dict,
               body: bytes) -> Response:
    """POST /api/{type}s/{org}/{name}/{branch|preupload|commit}/{rev}: returns the answer.

    Raises ErrorResponse for what the Hub refuses: a malformed body (400), an unknown revision
    (404), an existing branch (409) or a stale parent commit (412).
    """
    if params.get("create_pr", ["0"])[-1] in ("1", "true"):
        # Committing to the branch instead would silently do something else than asked.
        raise ErrorResponse(400, None, "the local hub does not open pull requests")
    if action == "branch":
        return _create_branch(store, repo, rev, _json(body) if body else {})
    if action == "preupload":
        return _preupload(store, repo, rev, _json(body))
    return _commit(store, base_url, repo, rev, body)


# -- repos and branches ----------------------------------------------------------

def _create_repo(store: RepoStore, base_url: str, payload: dict) -> Response:
    repo_type = payload.get("type") or "model"
    if repo_type not in REPO_TYPES:
        raise ErrorResponse(400, None, f"the local hub serves model and kernel repos, not {repo_type!r}")
    name, org = payload.get("name"), payload.get("organization")
    repo_id = f"{org}/{name}" if org else str(name)  # older clients sent the full id as the name
    try:
        store.check_id(repo_type, repo_id)
    except ValueError as exc:
        raise ErrorResponse(400, None, str(exc)) from None
    url = _repo_url(base_url, repo_type, repo_id)
    with store.lock:
        if store.lookup(repo_type, repo_id) is not None:
            # The client's exist_ok swallows exactly a 409.
            return json_response({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        store.create(repo_type, repo_id)
        # The Hub never has an empty repo: main starts with a .gitattributes commit.
        store.commit(repo_type, repo_id, {".gitattributes": GITATTRIBUTES}, message="initial commit")
    return json_response({"url": url, "name": repo_id, "id": repo_id})


def _create_branch(store: RepoStore, repo: Repo, branch: str, payload: dict) -> Response:
    if not _valid_branch(repo, branch):
        raise ErrorResponse(400, None, f"Invalid reference for a branch: {branch}")
    start = payload.get("startingPoint") or "main"
    with store.lock:
        if f"refs/heads/{branch}" in store.refs(repo):
            raise ErrorResponse(409, None, f"Reference already exists: refs/heads/{branch}")
        sha = store.resolve(repo, str(start))
        if sha is None:
            raise ErrorResponse(404, "RevisionNotFound", f"Invalid rev id: {start}")
        store.set_branch(repo.repo_type, repo.repo_id, branch, sha)
    return json_response({})


def _valid_branch(repo: Repo, branch: str) -> bool:
    # refs/... names (refs/pr/N above all) are the Hub's own; git decides the rest.
    if not branch or branch.startswith("refs/"):
        return False
    return bool(repo.git.run("check-ref-format", "--branch", branch, check=False).strip())


def _branch_head(store: RepoStore, repo: Repo, rev: str) -> str | None:
    """The head of branch `rev`; None for main in a repo with no commit yet (LocalHub.create_repo's)."""
    refs = store.refs(repo)
    head = refs.get(f"refs/heads/{rev}")
    if head is None and not (rev == "main" and not any(r.startswith("refs/heads/") for r in refs)):
        raise ErrorResponse(404, "RevisionNotFound", f"Invalid rev id: {rev}")
    return head


# -- preupload and commit ----------------------------------------------------------

def _preupload(store: RepoStore, repo: Repo, rev: str, payload: dict) -> Response:
    files = payload.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                              for f in files):
        raise ErrorResponse(400, None, "preupload wants {'files': [{'path': ..., 'sample': ..., 'size': ...}]}")
    head = _branch_head(store, repo, rev)
    snap = store.snapshot(repo, head) if head else None
    answers = []
    for f in files:
        answer = {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
        oid = _remote_oid(store, repo, snap, f["path"])
        if oid is not None:
            answer["oid"] = oid  # lets the client leave unchanged files out of the commit
        answers.append(answer)
    return json_response({"files": answers})


def _remote_oid(store: RepoStore, repo: Repo, snap: Snapshot | None, path: str) -> str | None:
    """The git blob sha of the content at `path`, the oid the client compares a "regular" file with."""
    entry = snap.entries.get(path) if snap is not None else None
    if entry is None or entry.kind != "file":
        return None
    if entry.lfs is None:
        return entry.oid
    data = store.content(repo, snap, path)  # the git blob holds the pointer; hash the real bytes
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _commit(store: RepoStore, base_url: str, repo: Repo, rev: str, body: bytes) -> Response:
    header, files, deletions = _parse_commit(body)
    message = header["summary"] + (f"\n\n{header['description']}" if header.get("description") else "")
    with store.lock:  # the parent check and the commit are one step
        head = _branch_head(store, repo, rev)
        parent = header.get("parentCommit")
        if parent and not (head or "").startswith(str(parent)):
            raise ErrorResponse(412, None, "A commit has happened since. Please refresh and try again.")
        _check_deletions(store, repo, head, deletions)
        try:
            sha = store.commit(repo.repo_type, repo.repo_id, files, branch=rev, message=message,
                               delete=[path for path, _ in deletions])
        except ValueError as exc:  # a path no repo may hold
            raise ErrorResponse(400, None, str(exc)) from None
    url = f"{_repo_url(base_url, repo.repo_type, repo.repo_id)}/commit/{sha}"
    return json_response({"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": ""})


def _parse_commit(body: bytes) -> tuple[dict, dict[str, bytes], list[tuple[str, bool]]]:
    """NDJSON lines: one header, then file / deletedFile / deletedFolder operations."""
    header, files, deletions = None, {}, []
    for line in body.splitlines():
        if not line.strip():
            continue
        item = _json(line)
        key, value = item.get("key"), item.get("value")
        if not isinstance(value, dict):
            raise ErrorResponse(400, None, f"commit line {key!r} has no value object")
        if key == "header":
            header = value
        elif key == "file":
            files[_path(value)] = _decode(value)
        elif key in ("deletedFile", "deletedFolder"):
            deletions.append((_path(value).rstrip("/"), key == "deletedFolder"))
        elif key == "lfsFile":
            raise ErrorResponse(400, None, "the local hub takes contents inline: preupload said 'regular'")
        else:
            raise ErrorResponse(400, None, f"unknown commit operation {key!r}")
    if header is None or not isinstance(header.get("summary"), str) or not header["summary"]:
        raise ErrorResponse(400, None, "the commit has no header with a summary")
    return header, files, deletions


def _check_deletions(store: RepoStore, repo: Repo, head: str | None,
                     deletions: list[tuple[str, bool]]) -> None:
    entries = store.snapshot(repo, head).entries if head else {}
    for path, folder in deletions:
        entry = entries.get(path)
        if entry is None or entry.kind != ("directory" if folder else "file"):
            what = "folder" if folder else "file"
            # The client adds its is_folder hint when it sees this very wording.
            raise ErrorResponse(404, "EntryNotFound", f"A {what} with this name doesn't exist: {path}")


def _decode(value: dict) -> bytes:
    content, encoding = value.get("content"), value.get("encoding", "base64")
    if not isinstance(content, str) or encoding not in ("base64", "utf-8"):
        raise ErrorResponse(400, None, f"file {value.get('path')!r} needs string content, base64 or utf-8")
    if encoding == "utf-8":
        return content.encode()
    try:
        return base64.b64decode(content, validate=True)
    except binascii.Error as exc:
        raise ErrorResponse(400, None, f"file {value.get('path')!r}: bad base64 ({exc})") from None


# -- helpers -----------------------------------------------------------------------

def _json(data: bytes) -> dict:
    try:
        obj = json.loads(data or b"{}")
    except ValueError as exc:
        raise ErrorResponse(400, None, f"the body is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ErrorResponse(400, None, "the body must be a JSON object")
    return obj


def _path(value: dict) -> str:
    path = value.get("path")
    if not isinstance(path, str) or not path:
        raise ErrorResponse(400, None, "a commit operation has no path")
    return path


def _repo_url(base_url: str, repo_type: str, repo_id: str) -> str:
    return f"{base_url}/{repo_id}" if repo_type == "model" else f"{base_url}/{REPO_TYPES[repo_type]}/{repo_id}"
