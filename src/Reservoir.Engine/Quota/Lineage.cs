namespace Reservoir.Engine.Quota;

/// <summary>
/// Which subvolume each snapshot was taken from, and in which transaction (SNAPSHOT_LINEAGE
/// items, SPEC.md §5.9): the only places an extent can be referenced from without an item in
/// the extent tree saying so are the snapshots (and their snapshots) taken of a subvolume
/// while it referenced the extent. A deleted subvolume stays here while snapshots of it are
/// left, since they may have inherited from it.
/// Changed only inside transaction handles (snapshot creation, removal of a dropped tree) and
/// read by the commit, which runs while no handle is open; <see cref="_lock"/> orders the
/// rare readers outside a commit (status, fsck helpers) against those changes.
/// </summary>
internal sealed class Lineage
{
    private readonly object _lock = new(); // guards both maps and _snapshots, except against the commit's readers (DescendantWalk, NextSnapshotAbove)
    private readonly Dictionary<ulong, (ulong Parent, ulong Otransid)> _parent = new();
    /// <summary>The ids of <see cref="_parent"/>'s keys (every snapshot here), ascending; a new
    /// snapshot's id is the highest, so it is appended.</summary>
    private readonly List<ulong> _snapshots = new();
    /// <summary>Snapshots of each subvolume in the order they were taken.</summary>
    private readonly Dictionary<ulong, List<(ulong Otransid, ulong Child)>> _children = new();

    /// <summary>Bumped by every change (the early accounting's answers hold only while it
    /// stays the same).</summary>
    public long Version => Interlocked.Read(ref _version);
    private long _version;

    public void Add(ulong child, ulong parent, ulong otransid)
    {
        lock (_lock)
        {
            Interlocked.Increment(ref _version);
            if (!_parent.ContainsKey(child))
            {
                if (_snapshots.Count == 0 || _snapshots[^1] < child) _snapshots.Add(child);
                else _snapshots.Insert(~_snapshots.BinarySearch(child), child);
            }
            _parent[child] = (parent, otransid);
            if (!_children.TryGetValue(parent, out var l)) _children[parent] = l = new();
            int i = l.Count;
            while (i > 0 && (l[i - 1].Otransid > otransid || (l[i - 1].Otransid == otransid && l[i - 1].Child > child))) i--;
            l.Insert(i, (otransid, child));
            if (child <= parent || (i > 0 && l[i - 1].Child >= child) || (i + 1 < l.Count && l[i + 1].Child <= child))
                IdsFollowCreation = false;
        }
    }

    /// <summary>Every snapshot has a higher id than its source and than the snapshots of its
    /// source taken before it, as ids are handed out (above every id in use). Checked as
    /// snapshots arrive; walks that prune by id (<see cref="DescendantWalk.Next"/> with a
    /// bound) rely on it, and prune nothing if it ever failed.</summary>
    public bool IdsFollowCreation { get; private set; } = true;

    public (ulong Parent, ulong Otransid)? ParentOf(ulong id) { lock (_lock) return _parent.TryGetValue(id, out var p) ? p : null; }

    public bool HasSnapshots(ulong id) { lock (_lock) return _children.ContainsKey(id); }

    /// <summary>Whether a snapshot of <paramref name="id"/> was taken in or after transaction
    /// <paramref name="since"/> (the children are in the order taken).</summary>
    public bool HasSnapshotsSince(ulong id, ulong since)
    {
        lock (_lock) return _children.TryGetValue(id, out var l) && l[^1].Otransid >= since;
    }

    /// <summary>Whether <paramref name="id"/> is one of the <see cref="Descendants"/> of
    /// <paramref name="origin"/> for transactions <paramref name="since"/> … <paramref name="until"/>:
    /// a snapshot of it taken then, or a snapshot (of a snapshot …) of one. Walks up from
    /// <paramref name="id"/>, as many steps as it has ancestors.</summary>
    public bool DescendsWithin(ulong id, ulong origin, ulong since, ulong until)
    {
        lock (_lock)
        {
            for (ulong x = id; _parent.TryGetValue(x, out var p); x = p.Parent)
                if (p.Parent == origin) return p.Otransid >= since && p.Otransid <= until;
            return false;
        }
    }

    /// <summary>Forgets a subvolume that is gone and has no snapshots left; returns its source
    /// (which may now be forgettable too), or null if it had none.</summary>
    public ulong? Remove(ulong id)
    {
        lock (_lock)
        {
            Interlocked.Increment(ref _version);
            if (!_parent.Remove(id, out var p)) return null;
            _snapshots.RemoveAt(_snapshots.BinarySearch(id));
            if (_children.TryGetValue(p.Parent, out var l))
            {
                l.RemoveAll(c => c.Child == id);
                if (l.Count == 0) _children.Remove(p.Parent);
            }
            return p.Parent;
        }
    }

    /// <summary>
    /// Snapshots of <paramref name="root"/>, of those snapshots, and so on, taken in or after
    /// transaction <paramref name="since"/>, depth first in the order they were taken, lazily
    /// (a caller that has seen enough stops early). A subvolume that started referencing an
    /// extent in transaction t passed it on to exactly these, at most (a snapshot taken in t
    /// itself may or may not have it). Call while no handle is open (at commit).
    /// </summary>
    public IEnumerable<ulong> Descendants(ulong root, ulong since)
    {
        var walk = new DescendantWalk(this);
        walk.Start(root, since);
        while (walk.Next(out ulong child)) yield return child;
    }

    /// <summary>
    /// <see cref="Descendants"/> as a reusable cursor: the commit walks one extent's candidates
    /// after another's, and an iterator with its stack per extent was a fifth of the quota
    /// accounting's time (allocations). Start, then Next until false or until the caller has
    /// seen enough. Only while the commit lock is held exclusively (the commit, quota enable):
    /// the lineage changes only inside handles, so then it cannot change, and the walk reads
    /// it without <see cref="_lock"/> (it walks the lists themselves unlocked in any case).
    /// </summary>
    internal sealed class DescendantWalk(Lineage lineage)
    {
        private readonly Stack<(List<(ulong Otransid, ulong Child)> List, int Index)> _stack = new();
        private ulong _since, _until;
        private List<(ulong Otransid, ulong Child)>? _rootList;

        /// <summary>Starts at the snapshots of <paramref name="root"/> taken in transactions
        /// <paramref name="since"/> … <paramref name="until"/> (the root held the extent then;
        /// a snapshot taken in either transaction itself may or may not have it, so both count),
        /// and every snapshot of theirs.</summary>
        public void Start(ulong root, ulong since, ulong until = ulong.MaxValue)
        {
            _stack.Clear();
            _since = since;
            _until = until;
            _rootList = lineage._children.GetValueOrDefault(root);
            if (_rootList != null) _stack.Push((_rootList, LowerBound(_rootList, since)));
        }

        /// <summary>The next descendant. With a <paramref name="bound"/>, skips those with a
        /// higher id: once a snapshot's id is above it, so are those of the snapshots of the
        /// same source taken after it and of every snapshot of theirs
        /// (<see cref="IdsFollowCreation"/>), so the rest of that list is dropped unseen.</summary>
        public bool Next(out ulong child, ulong bound = ulong.MaxValue)
        {
            bool prune = bound != ulong.MaxValue && lineage.IdsFollowCreation;
            while (_stack.TryPop(out var top))
            {
                var (list, i) = top;
                if (i >= list.Count) continue;
                if (prune && list[i].Child > bound) continue;
                // The root's snapshots are in the order taken: past its last transaction with
                // the extent, none of the rest can have it from the root.
                if (ReferenceEquals(list, _rootList) && list[i].Otransid > _until) continue;
                _stack.Push((list, i + 1));
                child = list[i].Otransid >= _since ? list[i].Child : 0;
                if (child == 0) continue;
                var sub = lineage._children.GetValueOrDefault(child);
                // A snapshot's own snapshots are younger than it, so all of them qualify.
                if (sub != null) _stack.Push((sub, 0));
                return true;
            }
            child = 0;
            return false;
        }
    }

    /// <summary>The lowest snapshot id above <paramref name="id"/>, if any. For the commit, which
    /// reads without <see cref="_lock"/> as <see cref="DescendantWalk"/> does (the lineage
    /// changes only inside handles, and the commit runs while none is open).</summary>
    public bool NextSnapshotAbove(ulong id, out ulong next)
    {
        next = 0;
        if (id == ulong.MaxValue) return false;
        int i = _snapshots.BinarySearch(id + 1);
        if (i < 0) i = ~i;
        if (i >= _snapshots.Count) return false;
        next = _snapshots[i];
        return true;
    }

    /// <summary>Whether <paramref name="id"/> is <paramref name="root"/> or one of the
    /// descendants a walk from (root, since, until) visits, found by walking up from it:
    /// O(how many snapshots of snapshots lie between them).</summary>
    public bool IsDescendantOrSelf(ulong id, ulong root, ulong since, ulong until = ulong.MaxValue)
    {
        lock (_lock)
        {
            for (ulong c = id; ;)
            {
                if (c == root) return true;
                if (!_parent.TryGetValue(c, out var p)) return false;
                if (p.Parent == root) return p.Otransid >= since && p.Otransid <= until;
                c = p.Parent;
            }
        }
    }

    /// <summary>
    /// The candidates for an extent <paramref name="root"/> wrote in transaction
    /// <paramref name="since"/> and still has or let go of without an ORIGIN_DROP: the root,
    /// then <see cref="DescendantWalk"/>'s order, the first <paramref name="max"/> (false when
    /// there are more). Under the lineage's lock, for the early accounting, which runs while
    /// handles are open; the lock is taken with no other held inside it.
    /// </summary>
    public bool CollectCandidates(ulong root, ulong since, List<ulong> into, int max)
    {
        into.Clear();
        return AddCandidates(root, since, ulong.MaxValue, into, max);
    }

    /// <summary>
    /// <see cref="CollectCandidates"/> for one more origin of the extent (a subvolume that took
    /// it by a clone, from transaction <paramref name="since"/>, until its ORIGIN_DROP's
    /// <paramref name="until"/>), added to those already in <paramref name="into"/> without
    /// repeating any (several origins' lineages can meet: a clone into a snapshot of the
    /// writer); false when there are more than <paramref name="max"/> in all.
    /// </summary>
    public bool AddCandidates(ulong root, ulong since, ulong until, List<ulong> into, int max)
    {
        // A linear check: the lists are a few tens of ids (the early accounting's bound).
        bool dedupe = into.Count > 0;
        lock (_lock)
        {
            if (!dedupe || !into.Contains(root))
            {
                if (into.Count >= max) return false;
                into.Add(root);
            }
            var walk = _lockedWalk ??= new DescendantWalk(this);
            walk.Start(root, since, until);
            while (walk.Next(out ulong c))
            {
                if (dedupe && into.Contains(c)) continue;
                if (into.Count >= max) return false;
                into.Add(c);
            }
            return true;
        }
    }

    private DescendantWalk? _lockedWalk; // CollectCandidates', guarded by _lock

    private static int LowerBound(List<(ulong Otransid, ulong Child)> l, ulong since)
    {
        int lo = 0, hi = l.Count;
        while (lo < hi) { int mid = (lo + hi) / 2; if (l[mid].Otransid < since) lo = mid + 1; else hi = mid; }
        return lo;
    }
}
