using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Tree;

namespace Reservoir.Engine;

/// <summary>
/// The cleaner (btrfs's cleaner kthread): drops the trees of deleted subvolumes in the
/// background, so that `subvolume delete` returns once the name is gone and the space comes
/// back a little later; <see cref="SyncSubvolumeDeletions"/> waits for it (`subvolume sync`).
/// A drop interrupted by unmount or a crash resumes at the next mount: the subvolume's orphan
/// item stays in the root tree until its drop has finished.
/// </summary>
public sealed partial class Filesystem
{
    private FsMutex? _cleanerLockField;
    private FsMutex CleanerLock => LazyLocks.Mutex(ref _cleanerLockField, Fs.Sched, "cleaner"); // guards the fields below
    private readonly Queue<BTree> _toDrop = new();
    private bool _cleanerBusy, _cleanerStopping;
    private FsThread? _cleaner;

    /// <summary>Hands a deleted subvolume's tree to the cleaner.</summary>
    private void QueueDrop(BTree t)
    {
        using var _ = CleanerLock.Lock();
        if (_toDrop.Contains(t)) return;
        _toDrop.Enqueue(t);
        _cleaner ??= Fs.Sched.Start("cleaner", CleanerLoop);
        CleanerLock.PulseAll();
    }

    private void CleanerLoop()
    {
        while (true)
        {
            BTree t;
            using (CleanerLock.Lock())
            {
                while (!_cleanerStopping && _toDrop.Count == 0) CleanerLock.Wait();
                if (_cleanerStopping) { _cleanerBusy = false; CleanerLock.PulseAll(); return; }
                t = _toDrop.Peek();
                _cleanerBusy = true;
            }
            bool finished = false;
            // An operation that acquired one of its inodes before the deletion may still be
            // writing into the tree: the drop starts once the last has let go, and what such a
            // write left in the page cache goes first, as the deletion's own quiesce did.
            Inodes.Subvolume? dead;
            using (_subvolsLock.Lock()) dead = _deadSubvols.GetValueOrDefault(t.Id);
            Func<bool> stopping = () => Volatile.Read(ref _cleanerStopping);
            try
            {
                bool quiet = dead?.WaitUntilUnreferenced(stopping) ?? true;
                if (quiet && dead != null) QuiesceSubvolume(dead);
                finished = quiet && DropSubvolumeTree(t, stopping);
            }
            catch (FsException ex) { Fs.Warn($"subvolume {t.Id}: dropping its tree stopped ({ex.Message}); the next mount resumes it"); }
            using (CleanerLock.Lock())
            {
                _toDrop.Dequeue();
                _cleanerBusy = false;
                CleanerLock.PulseAll();
            }
            if (!finished) Fs.Warn($"subvolume {t.Id}: deletion paused at unmount; the next mount resumes it");
        }
    }

    /// <summary>Waits until every deleted subvolume's tree has been dropped and its space
    /// freed (btrfs subvolume sync).</summary>
    public Errno SyncSubvolumeDeletions()
    {
        using (CleanerLock.Lock())
            // Not past an unmount's stop: what is left then waits for the next mount.
            while ((_toDrop.Count > 0 && !_cleanerStopping) || _cleanerBusy) CleanerLock.Wait();
        return Errno.OK;
    }

    /// <summary>At unmount: the cleaner stops between two batches (what is left stays announced
    /// by the orphan item) and exits.</summary>
    internal void StopCleaner()
    {
        FsThread? c;
        using (CleanerLock.Lock())
        {
            _cleanerStopping = true;
            CleanerLock.PulseAll();
            c = _cleaner;
        }
        c?.Join();
    }
}
