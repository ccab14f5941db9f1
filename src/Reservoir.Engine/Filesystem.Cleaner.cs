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
    private FsMutex CleanerLock => LazyLocks.Mutex(ref _cleanerLockField, Fs.Sched, "cleaner"); // guards the fields below; a leaf lock (nothing is taken under it)
    /// <summary>Deleted subvolumes' trees still to drop, in the order they were deleted.</summary>
    private readonly List<BTree> _toDrop = new();
    /// <summary>Those of <see cref="_toDrop"/> the cleaner found held by open files at its last
    /// look (btrfs's rule: a deleted subvolume's tree goes after its last file is closed).</summary>
    private HashSet<BTree> _pinned = new();
    /// <summary>Something may have changed since the cleaner's last look at the queue (a new
    /// deletion, a last close of a dead subvolume's file, a finished drop).</summary>
    private bool _cleanerLookAgain;
    private bool _cleanerBusy, _cleanerStopping;
    private FsThread? _cleaner;

    /// <summary>Hands a deleted subvolume's tree to the cleaner.</summary>
    private void QueueDrop(BTree t)
    {
        using var _ = CleanerLock.Lock();
        if (!_toDrop.Contains(t)) _toDrop.Add(t);
        _cleanerLookAgain = true;
        _cleaner ??= Fs.Sched.Start("cleaner", CleanerLoop);
        CleanerLock.PulseAll();
    }

    /// <summary>The last open of a deleted subvolume's file was closed: its tree may go now.</summary>
    private void WakeCleaner()
    {
        using var _ = CleanerLock.Lock();
        _cleanerLookAgain = true;
        CleanerLock.PulseAll();
    }

    private void CleanerLoop()
    {
        while (true)
        {
            List<BTree> queued;
            using (CleanerLock.Lock())
            {
                while (!_cleanerStopping && !_cleanerLookAgain) CleanerLock.Wait();
                if (_cleanerStopping) { _cleanerBusy = false; CleanerLock.PulseAll(); return; }
                _cleanerLookAgain = false;
                _cleanerBusy = true;
                queued = _toDrop.ToList();
            }
            // The first tree no open file holds; those that are held wait for their last close
            // (which wakes this loop) without holding up the others.
            BTree? t = null;
            var pinned = new HashSet<BTree>();
            foreach (var q in queued)
            {
                if (DeadSubvolumeOf(q.Id)?.HasOpenFiles == true) pinned.Add(q);
                else { t = q; break; }
            }
            if (t == null)
            {
                using (CleanerLock.Lock()) { _pinned = pinned; _cleanerBusy = false; CleanerLock.PulseAll(); }
                continue;
            }
            bool finished = false;
            // An operation that acquired one of its inodes before the deletion may still be
            // writing into the tree: the drop starts once the last has let go (no file of it is
            // open, and none can be opened now it is dead), and what such a write left in the page
            // cache goes first, as the deletion's own quiesce did.
            var dead = DeadSubvolumeOf(t.Id);
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
                _toDrop.Remove(t);
                _pinned = pinned;
                _cleanerLookAgain = true; // the rest of the queue
                _cleanerBusy = false;
                CleanerLock.PulseAll();
            }
            if (!finished) Fs.Warn($"subvolume {t.Id}: deletion paused at unmount; the next mount resumes it");
        }
    }

    private Inodes.Subvolume? DeadSubvolumeOf(ulong treeId)
    {
        using (_subvolsLock.Lock()) return _deadSubvols.GetValueOrDefault(treeId);
    }

    /// <summary>Waits until every deleted subvolume's tree has been dropped and its space
    /// freed (btrfs subvolume sync). One whose files are still open keeps its tree until the last
    /// is closed: this waits up to <paramref name="waitForClosesMs"/> for that (once every other
    /// is dropped), then answers EBUSY. A caller that wants to wait longer asks again, as
    /// `subvolume sync` does; waiting for ever here could wait for a close of the caller's own.</summary>
    /// <param name="ids">Only these subvolumes (`subvolume sync PATH ID…`); an id not being
    /// deleted is done already. Null: all.</param>
    public Errno SyncSubvolumeDeletions(long waitForClosesMs = 0, IReadOnlyCollection<ulong>? ids = null)
    {
        long deadline = Fs.Sched.NowMs + waitForClosesMs;
        bool Wanted(BTree t) => ids == null || ids.Contains(t.Id);
        using (CleanerLock.Lock())
            while (true)
            {
                // Not past an unmount's stop: what is left then waits for the next mount. (A
                // drop under way may be of another subvolume than those asked for: waited for
                // all the same, as it holds up theirs.)
                if (_cleanerBusy || (!_cleanerStopping && (_cleanerLookAgain || _toDrop.Any(t => Wanted(t) && !_pinned.Contains(t)))))
                {
                    CleanerLock.Wait();
                    continue;
                }
                if (_cleanerStopping || !_toDrop.Any(Wanted)) return Errno.OK;
                long left = deadline - Fs.Sched.NowMs;
                if (left <= 0) return Errno.EBUSY;
                CleanerLock.Wait((int)Math.Min(left, int.MaxValue)); // a last close wakes the cleaner, whose look wakes this
            }
    }

    /// <summary>Deleted subvolumes whose trees wait for files of them to be closed.</summary>
    public IReadOnlyList<ulong> DeletionsWaitingForCloses()
    {
        using (CleanerLock.Lock()) return _toDrop.Where(_pinned.Contains).Select(t => t.Id).ToList();
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
