"""The download manager against the stand-in Hub: verified files reach the library; failures keep partials."""

from __future__ import annotations

import errno
import io
import json
import threading
from pathlib import Path

import pytest

from app.core.downloads import DownloadEvent, DownloadManager, DownloadState
from app.core.errors import DownloadError
from app.core.gguf_info import inspect
from app.core.hub import HubClient
from app.core.hub_files import QuantOption, select_option
from app.core.library import Library
from app.core.paths import AppPaths
from app.core.transfer import CHUNK_SIZE, sidecar_path
from tests.core.hub.conftest import BIG, FAST, GATED, GOOD_TOKEN, Q4, Q8, REPO, SPLIT


def option(client: HubClient, **which: str) -> tuple[QuantOption, str]:
    details = client.details(which.pop("repo", REPO))
    return select_option(details.options, **which), details.sha or "main"


def add(manager: DownloadManager, client: HubClient, repo: str = REPO, dest: Path | None = None, **which: str):
    chosen, sha = option(client, repo=repo, **which)
    return manager.add(repo, chosen, revision=sha, dest_dir=dest)


def library_paths(paths: AppPaths) -> dict[str, Path]:
    return {e.path.name: e.path for e in Library(paths).scan() if e.ok}


def test_download_verifies_and_lands_in_the_library(manager, client, paths, fake_hub, repo_files):
    events: list[DownloadEvent] = []
    manager.subscribe(events.append)
    status = manager.wait(add(manager, client, quant="Q4_K_M").id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    target = paths.models_dir / REPO / Q4
    assert status.paths == (target,)
    assert target.read_bytes() == repo_files[Q4].data
    assert library_paths(paths)[Q4] == target
    assert inspect(target).name == "Tiny Llama Q4"
    assert not any(paths.downloads_dir.iterdir())  # no partial or sidecar left behind
    kinds = [(e.kind, e.status.state) for e in events]
    assert kinds[0] == ("added", DownloadState.QUEUED)
    assert ("state", DownloadState.RUNNING) in kinds and kinds[-1] == ("state", DownloadState.DONE)
    progress = [e.status.done_bytes for e in events if e.kind == "progress"]
    assert progress and progress[-1] == repo_files[Q4].size and progress == sorted(progress)
    assert fake_hub.bytes_served[Q4] == repo_files[Q4].size
    assert fake_hub.connections["cdn"] >= 1  # bytes came from the signed CDN URL, as on the real Hub


def test_split_model_downloads_as_one_item_and_is_one_library_entry(manager, client, paths, repo_files):
    status = manager.wait(add(manager, client, file=SPLIT).id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    assert [p.name for p in status.paths] == [SPLIT.replace("00001", f"{i:05d}") for i in (1, 2, 3)]
    assert status.total_bytes == sum(repo_files[p.name].size for p in status.paths)
    entries = [e for e in Library(paths).scan() if e.path.name.startswith("Tiny-Llama-F16")]
    assert len(entries) == 1 and entries[0].ok and len(entries[0].parts) == 3


def test_progress_reports_speed_and_eta_while_running(paths, client, fake_hub, repo_files):
    sent = 6 * CHUNK_SIZE + 123_456
    fake_hub.fault(BIG).stall_after = sent  # hold the transfer mid-file so the figures can be read
    manager = DownloadManager(paths, client)
    status = add(manager, client, file=BIG)
    _wait_for(lambda: manager.status(status.id).done_bytes == 6 * CHUNK_SIZE)  # whole chunks only
    _wait_for(lambda: fake_hub.bytes_served[BIG] == sent and fake_hub.unread_by_clients() == 0)
    snapshot = manager.status(status.id)
    assert snapshot.state is DownloadState.RUNNING
    assert snapshot.speed_bps > 0 and snapshot.eta_seconds is not None and snapshot.eta_seconds > 0
    assert 0 < snapshot.fraction < 1
    manager.pause(status.id)  # the stalled read is woken at once, not after the stall timeout
    paused = manager.wait(status.id, timeout=5)
    assert paused.state is DownloadState.PAUSED
    assert paused.done_bytes == sent  # the buffered tail was written out, not dropped
    fake_hub.fault(BIG).release.set()
    manager.resume(status.id)
    done = manager.wait(status.id, timeout=30)
    manager.close()
    assert done.state is DownloadState.DONE, done.error
    assert fake_hub.bytes_served[BIG] == repo_files[BIG].size  # nothing fetched twice


def test_cancel_deletes_the_partial(paths, client, fake_hub):
    fake_hub.fault(BIG).stall_after = 3_000_000
    manager = DownloadManager(paths, client)
    status = add(manager, client, file=BIG)
    part = paths.downloads_dir / f"{REPO.replace('/', '--')}--{Path(BIG).name}.part"
    manager.wait(status.id, timeout=0.5)
    _wait_for(lambda: part.exists() and part.stat().st_size >= 2 * CHUNK_SIZE)
    manager.cancel(status.id)
    assert manager.wait(status.id, timeout=5).state is DownloadState.CANCELLED
    manager.close()
    assert not part.exists() and not sidecar_path(part).exists()
    assert not (paths.models_dir / REPO / Path(BIG).name).exists()


def _wait_for(condition, timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError("condition not met in time")


def test_queue_runs_in_order_and_persists_across_a_restart(paths, client, fake_hub):
    fake_hub.fault(BIG).stall_after = 2_000_000
    manager = DownloadManager(paths, client)
    first = add(manager, client, file=BIG)
    second = add(manager, client, quant="Q8_0")
    assert manager.status(second.id).state is DownloadState.QUEUED  # one at a time
    manager.close()  # the app quits mid-download
    saved = json.loads((paths.data_dir / "downloads.json").read_text())
    assert {d["id"] for d in saved["downloads"]} == {first.id, second.id}

    again = DownloadManager(paths, client)  # next start: listed, paused, nothing fetched until asked
    requests_before = len(fake_hub.requests)
    listed = {s.id: s for s in again.statuses()}
    assert listed[first.id].state is DownloadState.PAUSED and listed[second.id].state is DownloadState.PAUSED
    assert listed[first.id].done_bytes >= CHUNK_SIZE  # the partial on disk counts
    assert len(fake_hub.requests) == requests_before
    fake_hub.fault(BIG).release.set()
    again.resume(first.id)
    again.resume(second.id)
    assert again.wait(first.id, timeout=30).state is DownloadState.DONE
    assert again.wait(second.id, timeout=30).state is DownloadState.DONE
    again.close()
    assert {Path(BIG).name, Q8} <= set(library_paths(paths))


def test_a_dropped_connection_resumes_with_a_range_request(manager, client, fake_hub, repo_files, paths):
    fake_hub.fault(BIG).drop_after = 5_000_000
    status = manager.wait(add(manager, client, file=BIG).id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    assert fake_hub.bytes_served[BIG] == repo_files[BIG].size
    ranges = [r for method, path, r in fake_hub.requests if method == "GET" and "/blobs/" in path]
    assert ranges == [None, "bytes=5000000-"]
    heads = [p for method, p, _ in fake_hub.requests if method == "HEAD"]
    assert len(heads) == 2  # the URL was resolved again: signed CDN URLs expire


def test_a_stalled_transfer_is_noticed_and_retried(manager, client, fake_hub, repo_files):
    fake_hub.fault(BIG).stall_after = 4_000_000  # then silence, connection open (released at teardown)
    status = manager.wait(add(manager, client, file=BIG).id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    assert fake_hub.bytes_served[BIG] == repo_files[BIG].size


def test_an_expired_signed_url_is_resolved_again_at_once(manager, client, fake_hub, paths):
    fake_hub.expire_next_urls = 1  # the first CDN URL has expired by the time it is used
    status = manager.wait(add(manager, client, quant="Q4_K_M").id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    heads = [p for method, p, _ in fake_hub.requests if method == "HEAD"]
    gets = [p for method, p, _ in fake_hub.requests if method == "GET" and "/blobs/" in p]
    assert len(heads) == 2 and len(gets) == 2 and gets[0] != gets[1]


def test_server_errors_are_retried_with_backoff(manager, client, fake_hub):
    fake_hub.fault(Q4).statuses = [503, 500]
    status = manager.wait(add(manager, client, quant="Q4_K_M").id, timeout=30)
    assert status.state is DownloadState.DONE, status.error


def test_persistent_failure_gives_up_keeping_the_partial(manager, client, fake_hub):
    fake_hub.fault(BIG).drop_after = 3_000_000
    fake_hub.fault(BIG).statuses = []
    status = add(manager, client, file=BIG)
    _wait_for(lambda: fake_hub.bytes_served[BIG] >= 3_000_000)
    fake_hub.fault(BIG).statuses = [503] * 10
    failed = manager.wait(status.id, timeout=30)
    assert failed.state is DownloadState.FAILED
    assert "giving up on Tiny-Llama-Big-Q6_K.gguf after 3 retries (the server answered 503)" in failed.error
    assert "kept: resume later" in failed.error
    assert failed.done_bytes == 3_000_000
    fake_hub.fault(BIG).statuses = []
    manager.resume(status.id)
    assert manager.wait(status.id, timeout=30).state is DownloadState.DONE


def test_a_corrupted_byte_is_caught_and_kept_out_of_the_library(manager, client, fake_hub, paths):
    fake_hub.fault(Q4).corrupt_at = 1000
    status = manager.wait(add(manager, client, quant="Q4_K_M").id, timeout=30)
    assert status.state is DownloadState.FAILED
    assert f"{Q4} is corrupt (sha256" in status.error and "kept out of the library" in status.error
    assert not (paths.models_dir / REPO / Q4).exists()
    assert Q4 not in library_paths(paths)
    assert not any(paths.downloads_dir.glob("*.part"))  # deleted, so a retry starts clean
    fake_hub.fault(Q4).corrupt_at = None
    manager.resume(status.id)
    assert manager.wait(status.id, timeout=30).state is DownloadState.DONE


class _FullDiskFile(io.FileIO):
    """A real file whose write path runs out of space after `room` bytes, as on a full disk."""

    room = 2_500_000

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() >= self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(bytes(data)[: self.room - self.tell()])


def test_disk_full_keeps_a_resumable_partial(paths, client, fake_hub, repo_files):
    manager = DownloadManager(paths, client, policy=FAST, opener=lambda p: _FullDiskFile(p, "ab"))
    status = manager.wait(add(manager, client, file=BIG).id, timeout=30)
    manager.close()
    assert status.state is DownloadState.FAILED
    assert status.error.startswith("disk full writing") and "kept for resuming" in status.error
    assert status.done_bytes == _FullDiskFile.room
    served_before = fake_hub.bytes_served[BIG]
    resumed = DownloadManager(paths, client, policy=FAST)  # space freed, app restarted
    assert resumed.wait(resumed.resume(status.id).id, timeout=30).state is DownloadState.DONE
    resumed.close()
    # The resume asked for exactly the missing bytes (what the first run had in flight is TCP's business).
    assert fake_hub.requests[-1][2] == f"bytes={_FullDiskFile.room}-"
    assert fake_hub.bytes_served[BIG] - served_before == repo_files[BIG].size - _FullDiskFile.room


def test_not_enough_free_space_refuses_before_starting(manager, client, fake_hub, paths):
    from tests.support.fake_hub import FakeFile, FakeRepo

    fake_hub.add(FakeRepo("hearth-test/Huge-GGUF", {"huge-Q4_K_M.gguf": FakeFile(b"", declared_size=1 << 60)}))
    status = manager.wait(add(manager, client, repo="hearth-test/Huge-GGUF", quant="Q4_K_M").id, timeout=10)
    assert status.state is DownloadState.FAILED
    assert status.error.startswith("not enough free space for huge-Q4_K_M.gguf")
    assert fake_hub.bytes_served["huge-Q4_K_M.gguf"] == 0


def test_gated_download_without_access_fails_with_the_reason(manager, client):
    status = manager.wait(add(manager, client, repo=GATED, quant="Q4_K_M").id, timeout=10)
    assert status.state is DownloadState.FAILED
    assert "is gated" in status.error


def test_gated_download_with_a_granted_token(paths, fake_hub):
    client = HubClient(fake_hub.url, GOOD_TOKEN)
    manager = DownloadManager(paths, client, policy=FAST)
    status = manager.wait(add(manager, client, repo=GATED, quant="Q4_K_M").id, timeout=30)
    manager.close()
    assert status.state is DownloadState.DONE, status.error
    assert any("/blobs/" in p for _, p, _ in fake_hub.requests)  # the bytes came from the CDN...
    assert {role for role, _ in fake_hub.authorized} == {"hub"}  # ...which never saw the token


def test_asking_again_for_a_finished_model_fetches_nothing(manager, client, fake_hub, paths):
    manager.wait(add(manager, client, quant="Q8_0").id, timeout=30)
    served = fake_hub.bytes_served[Q8]
    again = manager.wait(add(manager, client, quant="Q8_0").id, timeout=30)
    assert again.state is DownloadState.DONE and again.message == "already downloaded"
    assert fake_hub.bytes_served[Q8] == served


def test_a_different_file_in_the_way_is_refused(manager, client, paths):
    target = paths.models_dir / REPO / Q8
    target.parent.mkdir(parents=True)
    target.write_bytes(b"something else")
    with pytest.raises(DownloadError, match="already exists and differs"):
        add(manager, client, quant="Q8_0")
    assert target.read_bytes() == b"something else"


def test_dest_dir_outside_the_models_folder(manager, client, tmp_path: Path, repo_files):
    dest = tmp_path / "elsewhere"
    status = manager.wait(add(manager, client, quant="Q4_K_M", dest=dest).id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    assert (dest / Q4).read_bytes() == repo_files[Q4].data
    assert not any((dest / ".downloads").iterdir())


def test_a_partial_from_another_file_version_is_not_reused(manager, client, paths, fake_hub, repo_files):
    part = paths.downloads_dir / f"{REPO.replace('/', '--')}--{Q4}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"old bytes of another version")
    sidecar_path(part).write_text(json.dumps({"repo_id": REPO, "path": Q4, "size": 1, "digest": "sha256:00"}))
    status = manager.wait(add(manager, client, quant="Q4_K_M").id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    assert fake_hub.bytes_served[Q4] == repo_files[Q4].size


def test_a_server_that_ignores_range_restarts_the_file_cleanly(manager, client, fake_hub, repo_files, paths):
    fault = fake_hub.fault(BIG)
    fault.drop_after, fault.ignore_range = 3_000_000, True
    status = manager.wait(add(manager, client, file=BIG).id, timeout=30)
    assert status.state is DownloadState.DONE, status.error
    assert (paths.models_dir / REPO / Path(BIG).name).read_bytes() == repo_files[BIG].data
    assert fake_hub.bytes_served[BIG] == 3_000_000 + repo_files[BIG].size


def test_small_files_kept_in_git_are_checked_by_their_git_blob_id(manager, client, fake_hub, repo_files, paths):
    from tests.support.fake_hub import FakeFile, FakeRepo

    data = repo_files[Q4].data
    fake_hub.add(FakeRepo("hearth-test/Git-GGUF", {"tiny-Q2_K.gguf": FakeFile(data, lfs=False)}))
    chosen, sha = option(client, repo="hearth-test/Git-GGUF", quant="Q2_K")
    assert chosen.files[0].sha256 is None and chosen.files[0].git_oid
    fake_hub.fault("tiny-Q2_K.gguf").corrupt_at = 10
    failed = manager.wait(manager.add("hearth-test/Git-GGUF", chosen, revision=sha).id, timeout=30)
    assert failed.state is DownloadState.FAILED and "is corrupt" in failed.error
    fake_hub.fault("tiny-Q2_K.gguf").corrupt_at = None
    done = manager.wait(manager.resume(failed.id).id, timeout=30)
    assert done.state is DownloadState.DONE, done.error
    assert (paths.models_dir / "hearth-test/Git-GGUF" / "tiny-Q2_K.gguf").read_bytes() == data


def test_a_mirror_serving_files_itself_without_a_cdn(paths, repo_files, hearth_home):
    from tests.support.fake_hub import FakeFile, FakeHub, FakeRepo

    with FakeHub([FakeRepo(REPO, {Q4: FakeFile(repo_files[Q4].data)})], cdn=False) as mirror:
        client = HubClient(mirror.url)
        manager = DownloadManager(paths, client, policy=FAST)
        status = manager.wait(add(manager, client, quant="Q4_K_M").id, timeout=30)
        manager.close()
        assert status.state is DownloadState.DONE, status.error
        assert mirror.connections["cdn"] == 0


def test_two_processes_sharing_the_queue_file_keep_each_others_items(paths, client):
    first = DownloadManager(paths, client, policy=FAST)
    second = DownloadManager(paths, client, policy=FAST)  # e.g. the GUI and a `hearth download`
    a = first.wait(add(first, client, quant="Q4_K_M").id, timeout=30)
    b = second.wait(add(second, client, quant="Q8_0").id, timeout=30)
    first.close()
    second.close()
    assert {s.id for s in DownloadManager(paths, client).statuses()} == {a.id, b.id}
