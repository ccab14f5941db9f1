using Reservoir.Common;
using Reservoir.Common.Concurrency;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The discard worker of discard=async (<see cref="Alloc.SpaceManager.QueueFreedForDiscard"/>):
/// woken after each commit that freed something, it takes the queue and discards whatever of
/// each range is still free (<see cref="Alloc.SpaceManager.DiscardIfFree"/>), so commits never
/// wait for the device. Without background threads (commit interval 0, as the tools and the
/// power-cut simulator mount) each sync discards the queue itself, deterministically; the
/// unmount discards what is left after its last commit.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>The discard worker; null without background threads or without discard=async.</summary>
    private KickedWorker? _discarder;

    /// <summary>Bytes the async discards handed the device (for reports and tests).</summary>
    public long AsyncDiscardedBytes;

    private bool AsyncDiscard => Options.Discard == DiscardMode.Async && !ReadOnly && !Device.ReadOnly;

    /// <summary>At mount: queue what commits free, and start the worker when background
    /// threads run.</summary>
    public void StartDiscarder()
    {
        if (!AsyncDiscard) return;
        Space.QueueFreedForDiscard = true;
        if (Options.CommitIntervalMs <= 0) return;
        _discarder = new KickedWorker(Sched, "discarder", Timeout.Infinite, DiscardQueued);
    }

    /// <summary>After a commit: the worker has ranges to look at (a no-op without one).</summary>
    private void KickDiscarder() => _discarder?.Kick();

    /// <summary>Discards every range queued so far that is still free. The device's discard
    /// runs under the space lock, piece by piece; the lock is let go between ranges. A device
    /// error is noted and the rest of the queue dropped (a discard is advice).</summary>
    public void DiscardQueued()
    {
        if (!AsyncDiscard || FailedReason != null) return;
        foreach (var (s, l) in Space.TakeUndiscarded())
        {
            Sched.Yield("discard:async");
            try { Interlocked.Add(ref AsyncDiscardedBytes, (long)Space.DiscardIfFree((at, n) => Device.Discard(at, n), s, l)); }
            catch (DeviceIOException ex) { Warn($"discard of [{s}, +{l}) failed: {ex.Message}"); break; }
        }
    }

    /// <summary>Sync without a worker discards the queue itself (see the class summary).</summary>
    public void DiscardQueuedWithoutWorker()
    {
        if (_discarder == null) DiscardQueued();
    }

    private void StopDiscarder()
    {
        _discarder?.Stop();
        _discarder = null;
    }
}
