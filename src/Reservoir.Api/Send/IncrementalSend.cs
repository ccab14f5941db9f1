using System.Text;
using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Api.Send;

/// <summary>
/// An incremental send (`send -p PARENT`): the changes from a read-only parent subvolume to a
/// read-only later one, as a stream whose SNAPSHOT command names the parent, to be applied by
/// `receive` (or `btrfs receive`) to its copy of the parent.
///
/// Inodes are matched by inode number and birth time (a snapshot keeps its source's inode
/// numbers; the birth time tells a later inode that took a freed number from the old one).
/// When the sources can say which inodes changed (<see cref="IChangeTrackingSource"/>: two
/// snapshots of one image, read through the engine or through one mount), only those are
/// looked at, with the directories above them, so the send costs what changed (btrfs's compares
/// the two trees the same way); otherwise both trees are walked whole. An inode whose ctime,
/// mtime, size, mode and owner are all unchanged is unchanged (every change to an inode, its
/// data and its names moves its ctime, which nothing can set back), so only changed inodes cost
/// stream; a changed file's data is compared chunk by chunk with its old data and only
/// differing chunks are sent.
///
/// The namespace is changed in an order in which every path exists when a command names it and
/// no name is taken when one is created, whatever was renamed, swapped or moved into what:
/// <list type="number">
/// <item>directories that moved are renamed to an orphan name at the root (o<i>ino</i>-<i>k</i>-0,
/// as btrfs names them), and new directories and non-directories are made under orphan names
/// there (new files with their data);</item>
/// <item>names that went away are removed: a non-directory that lives on keeps one of them as
/// an orphan name (a file renamed or whose names were swapped is never left without a name),
/// the others are unlinked, and deleted directories are removed deepest first (what they held
/// has gone or been moved out by then);</item>
/// <item>directories are renamed from their orphan names to their places, parents first; then
/// non-directories: an orphan name becomes the first new name, further names are links;</item>
/// <item>changed inodes get their data, owner, mode, xattrs and times, directories last and
/// deepest first, and every directory the stream touched gets its times again.</item>
/// </list>
/// </summary>
public sealed class IncrementalSend
{
    private readonly record struct Id(ulong Ino, Timespec Btime);
    private readonly record struct Entry(Id Parent, string Name);

    private sealed class Node(Id id, SendStat st, string path)
    {
        public readonly Id Id = id;
        public readonly SendStat St = st;
        public readonly string Path = path; // its first name found, in the subvolume walked
        public readonly List<Entry> Names = new();
        public int Depth => Path.Length == 0 ? 0 : Path.Count(ch => ch == '/') + 1;
    }

    /// <summary>Every subvolume's root: matched whatever its inode number and birth time.</summary>
    private static readonly Id Root = new(0, default);

    private readonly ISendSource _new, _old;
    private readonly InodeEmitter _e;
    /// <summary>The inodes of the newer and the parent subvolume: all of them, or (with
    /// <see cref="_oldAt"/>) the root and those that changed.</summary>
    private readonly Dictionary<Id, Node> _n, _p;
    /// <summary>Set when only changed inodes are loaded: where the parent's inodes are, for the
    /// unchanged directories the stream's paths pass through.</summary>
    private readonly InodeLocator? _oldAt;
    /// <summary>Where each directory is on the receiving side now (the root has no entry); an
    /// unchanged directory is added when a path first passes through it (<see cref="DirAt"/>).</summary>
    private readonly Dictionary<Id, Entry> _dirAt = new();
    /// <summary>The names each non-directory has on the receiving side now.</summary>
    private readonly Dictionary<Id, List<Entry>> _namesNow = new();
    private readonly HashSet<string> _rootNames = new(StringComparer.Ordinal);
    private readonly HashSet<Id> _touched = new();
    /// <summary>Where a new file's extents may already be on the receiving side: the parent,
    /// then the clone sources.</summary>
    private readonly CloneSearch _clones = new();

    private readonly Guid _uuid, _parentUuid;
    private readonly ulong _ctransid, _parentCtransid;

    private IncrementalSend(ISendSource newer, ISendSource parent, Stream output, Guid uuid, ulong ctransid, Guid parentUuid, ulong parentCtransid, SendOptions options)
    {
        (_uuid, _ctransid, _parentUuid, _parentCtransid) = (uuid, ctransid, parentUuid, parentCtransid);
        _new = newer;
        _old = parent;
        _e = new InodeEmitter(new SendStreamWriter(output, options.Version, !options.OmitStreamHeader)) { NoData = options.NoData };
        if (newer is IChangeTrackingSource nt && parent is IChangeTrackingSource pt && nt.ChangedSince(parent) is { } changed)
        {
            _oldAt = new InodeLocator(pt);
            _p = Load(_oldAt, changed);
            _n = Load(new InodeLocator(nt), changed);
        }
        else
        {
            _p = Walk(parent);
            _n = Walk(newer);
        }
    }

    /// <summary>The root and the <paramref name="changed"/> inodes that have a name in the
    /// subvolume <paramref name="at"/> reads, with all their names.</summary>
    private static Dictionary<Id, Node> Load(InodeLocator at, IReadOnlyCollection<ulong> changed)
    {
        var root = at.Stat(Engine.Filesystem.RootIno);
        if (!root.IsDir) throw new FsException(Errno.ENOTDIR, "send: the subvolume's root is not a directory");
        var nodes = new Dictionary<Id, Node> { [Root] = new Node(Root, root, "") };
        foreach (ulong ino in changed.Order())
        {
            if (ino == Engine.Filesystem.RootIno) continue;
            var names = at.Names(ino);
            if (names.Count == 0) continue; // not in this subvolume, or nameless (unlinked, still open)
            var st = at.Stat(ino);
            if (st.IsDir && names.Count != 1) throw new FsException(Errno.EUCLEAN, $"send: directory '{at.PathOf(ino)}' has {names.Count} names");
            var n = new Node(new Id(ino, st.Btime), st, at.PathOf(ino)!);
            foreach (var (dir, name) in names) n.Names.Add(new Entry(IdOf(at, dir), name));
            nodes[n.Id] = n;
        }
        return nodes;
    }

    private static Id IdOf(InodeLocator at, ulong dir) => dir == Engine.Filesystem.RootIno ? Root : new Id(dir, at.Stat(dir).Btime);

    /// <summary>Where directory <paramref name="dir"/> is on the receiving side now. One not
    /// loaded did not change, so it is where the parent has it (its own parent may have moved;
    /// paths are made from the top down).</summary>
    private Entry DirAt(Id dir)
    {
        if (_dirAt.TryGetValue(dir, out var at)) return at;
        if (_oldAt == null) throw new FsException(Errno.EUCLEAN, $"send: directory {dir.Ino} is not where the walk found it");
        var names = _oldAt.Names(dir.Ino);
        if (names.Count != 1) throw new FsException(Errno.EUCLEAN, $"send: directory {dir.Ino} has {names.Count} names in the parent");
        return _dirAt[dir] = new Entry(IdOf(_oldAt, names[0].Dir), names[0].Name);
    }

    /// <summary>Sends the changes from <paramref name="parent"/> (whose uuid and ctransid the
    /// receiver finds its copy by) to <paramref name="newer"/>, named <paramref name="name"/>.</summary>
    /// <param name="cloneSources">other read-only subvolumes the receiver has (`send -c`), whose
    /// files a new file's extents may be cloned from, as from the parent's</param>
    public static SendSummary Run(ISendSource newer, string name, Guid uuid, ulong ctransid,
        ISendSource parent, Guid parentUuid, ulong parentCtransid, Stream output, IReadOnlyList<SendSubvolume>? cloneSources = null, SendOptions? options = null)
    {
        FullSend.CheckName(name);
        options ??= new SendOptions();
        var s = new IncrementalSend(newer, parent, output, uuid, ctransid, parentUuid, parentCtransid, options);
        s._clones.Add(new SendSubvolume(parent, parentUuid, parentCtransid), s._oldAt);
        foreach (var c in cloneSources ?? []) s._clones.Add(c);
        s._e.W.Begin(SendCommand.Snapshot).Path(SendAttr.Path, name).Uuid(SendAttr.Uuid, uuid).U64(SendAttr.Ctransid, ctransid)
            .Uuid(SendAttr.CloneUuid, parentUuid).U64(SendAttr.CloneCtransid, parentCtransid).Finish();
        s.Namespace();
        s.Changes();
        if (!options.OmitEnd) s._e.W.Begin(SendCommand.End).Finish();
        return new SendSummary(s._e.W.CommandsWritten, s._e.W.BytesWritten, s._e.Inodes, s._e.DataBytes, s._e.CloneBytes, s._n.Count + s._p.Count, s._e.HoleBytes);
    }

    private static Dictionary<Id, Node> Walk(ISendSource src)
    {
        var root = src.Lstat("");
        if (!root.IsDir) throw new FsException(Errno.ENOTDIR, "send: the subvolume's root is not a directory");
        var nodes = new Dictionary<Id, Node> { [Root] = new Node(Root, root, "") };
        var queue = new Queue<(Id, string)>();
        queue.Enqueue((Root, ""));
        while (queue.Count > 0)
        {
            var (dir, dirPath) = queue.Dequeue();
            var names = src.List(dirPath).ToList();
            names.Sort(string.CompareOrdinal);
            foreach (var name in names)
            {
                string p = FullSend.Child(dirPath, name);
                var st = src.Lstat(p);
                var id = new Id(st.Ino, st.Btime);
                if (!nodes.TryGetValue(id, out var n))
                {
                    nodes[id] = n = new Node(id, st, p);
                    if (st.IsDir) queue.Enqueue((id, p));
                }
                else if (st.IsDir || n.St.Type != st.Type)
                    throw new FsException(Errno.EUCLEAN, $"send: '{p}' and '{n.Path}' are one inode, and a directory or of two types");
                n.Names.Add(new Entry(dir, name));
            }
        }
        return nodes;
    }

    private string PathOf(Id dir)
    {
        if (dir == Root) return "";
        var at = DirAt(dir);
        return FullSend.Child(PathOf(at.Parent), at.Name);
    }
    private string PathOf(Entry e) => FullSend.Child(PathOf(e.Parent), e.Name);

    private string Orphan(Id id)
    {
        for (int k = 0; ; k++)
        {
            string o = $"o{id.Ino}-{k}-0";
            if (_rootNames.Add(o)) return o;
        }
    }

    private void Rename(string from, string to, Id fromDir, Id toDir)
    {
        _e.W.Begin(SendCommand.Rename).Path(SendAttr.Path, from).Path(SendAttr.PathTo, to).Finish();
        _touched.Add(fromDir);
        _touched.Add(toDir);
    }

    private void Namespace()
    {
        foreach (var n in _p.Values)
        {
            if (n.Id == Root) continue;
            if (n.St.IsDir) _dirAt[n.Id] = n.Names[0];
            else _namesNow[n.Id] = [.. n.Names];
        }
        foreach (var e in _n.Values.Concat(_p.Values).SelectMany(x => x.Names))
            if (e.Parent == Root) _rootNames.Add(e.Name); // orphan names must take none of these
        if (_oldAt != null) // nor those of the unchanged inodes, which were not loaded
        {
            _rootNames.UnionWith(_old.List(""));
            _rootNames.UnionWith(_new.List(""));
        }

        // 1. Moved directories to orphan names; new inodes made under orphan names.
        foreach (var n in _n.Values.Where(x => x.St.IsDir && x.Id != Root).OrderBy(x => x.Depth))
        {
            if (_p.TryGetValue(n.Id, out var old))
            {
                if (!old.St.IsDir) throw new FsException(Errno.EUCLEAN, $"send: '{n.Path}' changed type under one inode number and birth time");
                if (old.Names[0] == n.Names[0]) continue;
                string o = Orphan(n.Id);
                Rename(PathOf(n.Id), o, DirAt(n.Id).Parent, Root);
                _dirAt[n.Id] = new Entry(Root, o);
            }
            else
            {
                string o = Orphan(n.Id);
                _e.Create(_new, n.Path, o, n.St);
                _touched.Add(Root);
                _dirAt[n.Id] = new Entry(Root, o);
            }
        }
        // New files' data may be clones: of a file the parent has (a reflink copied into the
        // subvolume since: its path in the received parent never changes), or of a new file
        // written before in this step (under its orphan name, which holds until step 3).
        _e.Clones = new CloneSources(_uuid, _ctransid) { LoadMore = _clones.Load };
        foreach (var n in _n.Values.Where(x => !x.St.IsDir && !_p.ContainsKey(x.Id)).OrderBy(x => x.Path, StringComparer.Ordinal))
        {
            string o = Orphan(n.Id);
            _e.Create(_new, n.Path, o, n.St);
            if (n.St.IsReg) _e.Data(_new, n.Path, o, n.St);
            _touched.Add(Root);
            _namesNow[n.Id] = [new Entry(Root, o)];
        }
        _e.Clones = null;

        // 2. Names that went away: survivors keep one as an orphan name; deleted directories go,
        // deepest first.
        foreach (var old in _p.Values.Where(x => !x.St.IsDir).OrderBy(x => x.Path, StringComparer.Ordinal))
        {
            _n.TryGetValue(old.Id, out var now);
            if (now != null && now.St.Type != old.St.Type) throw new FsException(Errno.EUCLEAN, $"send: '{now.Path}' changed type under one inode number and birth time");
            var keep = now?.Names ?? [];
            var current = _namesNow[old.Id];
            bool keptOne = current.Any(keep.Contains);
            foreach (var gone in old.Names.Where(x => !keep.Contains(x)).ToList())
            {
                if (now != null && !keptOne)
                {
                    string o = Orphan(old.Id);
                    Rename(PathOf(gone), o, gone.Parent, Root);
                    current.Add(new Entry(Root, o));
                    keptOne = true;
                }
                else
                {
                    _e.W.Begin(SendCommand.Unlink).Path(SendAttr.Path, PathOf(gone)).Finish();
                    _touched.Add(gone.Parent);
                }
                current.Remove(gone);
            }
            if (now == null) _namesNow.Remove(old.Id);
        }
        foreach (var old in _p.Values.Where(x => x.St.IsDir && x.Id != Root && !_n.ContainsKey(x.Id)).OrderByDescending(x => x.Depth))
        {
            _e.W.Begin(SendCommand.Rmdir).Path(SendAttr.Path, PathOf(old.Id)).Finish();
            _touched.Add(DirAt(old.Id).Parent);
            _dirAt.Remove(old.Id);
        }

        // 3. Directories to their places, parents first; then the other inodes' names.
        foreach (var n in _n.Values.Where(x => x.St.IsDir && x.Id != Root).OrderBy(x => x.Depth).ThenBy(x => x.Path, StringComparer.Ordinal))
        {
            var at = DirAt(n.Id);
            if (at == n.Names[0]) continue;
            Rename(PathOf(n.Id), PathOf(n.Names[0]), at.Parent, n.Names[0].Parent);
            _dirAt[n.Id] = n.Names[0];
        }
        foreach (var n in _n.Values.Where(x => !x.St.IsDir).OrderBy(x => x.Path, StringComparer.Ordinal))
        {
            var current = _namesNow[n.Id];
            foreach (var want in n.Names.Where(x => !current.Contains(x)).ToList())
            {
                int orphan = current.FindIndex(x => x.Parent == Root && !n.Names.Contains(x));
                if (orphan >= 0)
                {
                    Rename(PathOf(current[orphan]), PathOf(want), Root, want.Parent);
                    current[orphan] = want;
                }
                else
                {
                    _e.W.Begin(SendCommand.Link).Path(SendAttr.Path, PathOf(want)).Path(SendAttr.PathLink, PathOf(current[0])).Finish();
                    _touched.Add(want.Parent);
                    current.Add(want);
                }
            }
        }
    }


    private static bool Changed(SendStat a, SendStat b) =>
        a.Ctime != b.Ctime || a.Mtime != b.Mtime || a.Size != b.Size || a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid;

    /// <summary>4. Data and attributes of what changed; directories last, deepest first.</summary>
    private void Changes()
    {
        foreach (var n in _n.Values.Where(x => !x.St.IsDir).OrderBy(x => x.Path, StringComparer.Ordinal))
        {
            if (!_p.TryGetValue(n.Id, out var old))
            {
                _e.Attributes(_new, n.Path, n.Path, n.St);
                continue;
            }
            if (!Changed(old.St, n.St)) continue;
            if (n.St.IsReg) _e.Data(_new, n.Path, n.Path, n.St, _old, old.Path, old.St.Size);
            AttributeChanges(n, old);
        }
        foreach (var n in _n.Values.Where(x => x.St.IsDir).OrderByDescending(x => x.Depth).ThenBy(x => x.Path, StringComparer.Ordinal))
        {
            if (!_p.TryGetValue(n.Id, out var old)) _e.Attributes(_new, n.Path, n.Path, n.St);
            else if (Changed(old.St, n.St)) AttributeChanges(n, old);
            else if (_touched.Contains(n.Id)) _e.Utimes(n.Path, n.St);
        }
    }

    private void AttributeChanges(Node n, Node old)
    {
        _e.Inodes++;
        string p = n.Path;
        bool chown = n.St.Uid != old.St.Uid || n.St.Gid != old.St.Gid;
        if (chown) _e.Chown(p, n.St);
        // After a chown (which clears set-user-ID) or data (a write may), the mode again.
        bool chmod = !n.St.IsLnk && (chown || n.St.Mode != old.St.Mode || (n.St.IsReg && (n.St.Mode & 0xC00) != 0));
        if (chmod) _e.Chmod(p, n.St);
        var before = _old.Xattrs(old.Path).ToDictionary(x => Encoding.Latin1.GetString(x.Name), x => x.Value);
        var after = _new.Xattrs(p);
        foreach (var name in before.Keys.Except(after.Select(x => Encoding.Latin1.GetString(x.Name))))
        {
            _e.W.Begin(SendCommand.RemoveXattr).Path(SendAttr.Path, p).Bytes(SendAttr.XattrName, Encoding.Latin1.GetBytes(name)).Finish();
        }
        // Every xattr again after a chown or chmod (chown clears security.capability, chmod
        // rewrites the ACL's mask), else the ones whose values changed.
        foreach (var (name, value) in after)
            if (chown || chmod || !before.TryGetValue(Encoding.Latin1.GetString(name), out var was) || !was.AsSpan().SequenceEqual(value))
                _e.SetXattr(p, name, value);
        _e.Utimes(p, n.St);
    }
}
