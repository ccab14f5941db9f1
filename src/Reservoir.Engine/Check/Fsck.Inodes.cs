using Reservoir.Format;
using Reservoir.Format.Items;
using Reservoir.Engine.Inodes;

namespace Reservoir.Engine.Check;

public sealed partial class Fsck
{
    /// <summary>Inodes and names: every name's three items agree, link counts and directory
    /// sizes match the names, file extents do not overlap and add up to nbytes, nameless inodes
    /// have orphan items, every named inode is reachable from the root.</summary>
    private void CheckInodes()
    {
        const ulong root = FormatConstants.RootDirObjectId;
        if (!_inodes.TryGetValue(root, out var rootItem) || !Mode.IsDir(rootItem.Mode))
            _r.Add(FindingKind.Structure, "root directory", "missing or not a directory");
        foreach (var id in _objectIds)
            if (!_inodes.ContainsKey(id) && !_orphans.Contains(id))
                _r.Add(FindingKind.Structure, InodeWhere(id), "items without an INODE_ITEM");

        // DIR_INDEX → DIR_ITEM and INODE_REF.
        var namesOf = new Dictionary<ulong, int>();
        var subdirs = new Dictionary<ulong, int>();
        var dirNameBytes = new Dictionary<ulong, ulong>();
        foreach (var ((dir, idx), (name, child, type, subvol)) in _dirIndex)
        {
            string where = $"{(_tree == TreeIds.FsTree ? "" : $"subvolume {_tree} ")}directory {dir} entry '{Show(name)}' (index {idx})";
            if (!_inodes.TryGetValue(dir, out var di) || !Mode.IsDir(di.Mode)) _r.Add(FindingKind.Structure, where, "parent is not a directory");
            if (!_dirItems.TryGetValue((dir, name), out var item) || item.Child != child || item.Subvol != subvol) _r.Add(FindingKind.Structure, where, "no matching DIR_ITEM");
            if (subvol)
            {
                // Names another subvolume: its ROOT_REF must say the same, and it counts as a
                // subdirectory (its root's ".." is this directory).
                if (!_roots.ContainsKey(child) || _deletedSubvols.Contains(child)) _r.Add(FindingKind.Structure, where, $"names subvolume {child}, which does not exist");
                else if (!_rootRefs.TryGetValue((_tree, child), out var link) || link != (dir, idx, name)) _r.Add(FindingKind.Structure, where, $"subvolume {child}'s ROOT_REF does not match");
                else _linkedSubvols.Add((_tree, child));
                if (type != FileTypes.Dir) _r.Add(FindingKind.Structure, where, $"subvolume entry of type {type}");
                subdirs[dir] = subdirs.GetValueOrDefault(dir) + 1;
                dirNameBytes[dir] = dirNameBytes.GetValueOrDefault(dir) + (ulong)System.Text.Encoding.Latin1.GetByteCount(name) * 2;
                continue;
            }
            if (!_inodeRefs.TryGetValue(child, out var refs) || !refs.Contains((dir, idx, name))) _r.Add(FindingKind.Structure, where, $"inode {child} has no matching INODE_REF");
            if (!_inodes.TryGetValue(child, out var ci)) { _r.Add(FindingKind.Structure, where, $"names missing inode {child}"); continue; }
            if (FileTypes.FromMode(ci.Mode) != type) _r.Add(FindingKind.Structure, where, $"type {type} but the inode's mode says {FileTypes.FromMode(ci.Mode)}");
            namesOf[child] = namesOf.GetValueOrDefault(child) + 1;
            if (Mode.IsDir(ci.Mode)) subdirs[dir] = subdirs.GetValueOrDefault(dir) + 1;
            dirNameBytes[dir] = dirNameBytes.GetValueOrDefault(dir) + (ulong)System.Text.Encoding.Latin1.GetByteCount(name) * 2;
        }
        var indexed = _dirIndex.Select(kv => (kv.Key.Dir, kv.Value.Name)).ToHashSet();
        foreach (var ((dir, name), _) in _dirItems)
            if (!indexed.Contains((dir, name))) _r.Add(FindingKind.Structure, $"directory {dir} entry '{Show(name)}'", "DIR_ITEM without a DIR_INDEX");
        foreach (var (ino, refs) in _inodeRefs)
            foreach (var (parent, idx, name) in refs)
                if (!(ino == root && parent == root) && !_dirIndex.ContainsKey((parent, idx)))
                    _r.Add(FindingKind.Structure, InodeWhere(ino), $"INODE_REF '{Show(name)}' in directory {parent} without a directory entry");

        foreach (var (ino, it) in _inodes)
        {
            string where = InodeWhere(ino);
            if (!Mode.ValidType(it.Mode)) _r.Add(FindingKind.Structure, where, $"invalid mode {Convert.ToString(it.Mode, 8)}");
            int names = namesOf.GetValueOrDefault(ino);
            if (Mode.IsDir(it.Mode))
            {
                uint want = 2u + (uint)subdirs.GetValueOrDefault(ino);
                if (ino != root && names == 0 && it.Nlink == 0 && _orphans.Contains(ino)) continue;
                if (names > 1) _r.Add(FindingKind.Structure, where, $"directory with {names} names");
                if (it.Nlink != want) Fix(where, $"link count {it.Nlink}, expected {want}", ino, i => i.Item.Nlink = want);
                ulong size = dirNameBytes.GetValueOrDefault(ino);
                if (it.FileSize != size) Fix(where, $"directory size {it.FileSize}, names add up to {size}", ino, i => i.Item.FileSize = size);
            }
            else if (it.Nlink != names)
            {
                if (names == 0 && it.Nlink == 0 && _orphans.Contains(ino)) { }
                else Fix(where, $"link count {it.Nlink}, names found {names}", ino, i => i.Item.Nlink = (uint)names);
            }
            if (names == 0 && ino != root && !_orphans.Contains(ino))
            {
                _r.Add(FindingKind.Counter, where, "no names and no orphan item (lost inode)");
                _orphansToAdd.Add(NodeIds.Encode(_tree, ino));
            }
            CheckFileExtents(ino, it);
        }
        foreach (var ino in _orphans)
        {
            if (_inodes.TryGetValue(ino, out var it) && it.Nlink > 0 && namesOf.GetValueOrDefault(ino) > 0)
                _r.Add(FindingKind.Structure, InodeWhere(ino), "orphan item for an inode that still has names");
            else _r.Add(FindingKind.Notice, InodeWhere(ino), "orphan awaiting deletion at the next mount");
        }
        CheckReachable(root);
        _r.Directories += _inodes.Count(kv => Mode.IsDir(kv.Value.Mode));
    }

    private void Fix(string where, string msg, ulong ino, Action<Inode> fix)
    {
        _r.Add(FindingKind.Counter, where, msg);
        ulong node = NodeIds.Encode(_tree, ino);
        var prev = _inodeFixes.GetValueOrDefault(node);
        _inodeFixes[node] = prev == null ? fix : i => { prev(i); fix(i); };
    }

    private void CheckFileExtents(ulong ino, InodeItem it)
    {
        if (!_fileExtents.TryGetValue(ino, out var list)) list = new();
        string where = InodeWhere(ino);
        ulong prevEnd = 0, nbytes = 0, dataEnd = 0;
        bool inline = false;
        foreach (var (pos, fe) in list)
        {
            if (pos < prevEnd) _r.Add(FindingKind.Structure, where, $"file extents overlap at offset {pos}");
            prevEnd = pos + fe.NumBytes;
            if (fe.Type == FileExtentType.Inline) { inline = true; continue; }
            nbytes += fe.NumBytes;
            // fallocate(KEEP_SIZE) may preallocate past the end; written data may not.
            if (fe.Type == FileExtentType.Regular) dataEnd = prevEnd;
        }
        if (inline && !Mode.IsLnk(it.Mode)) _r.Add(FindingKind.Structure, where, "inline extent in a non-symlink");
        if (Mode.IsLnk(it.Mode) && (!inline || list.Count != 1)) _r.Add(FindingKind.Structure, where, "symlink without exactly one inline target");
        if (!Mode.IsReg(it.Mode) && !Mode.IsLnk(it.Mode) && list.Count > 0) _r.Add(FindingKind.Structure, where, "data extents on a non-regular inode");
        if (Mode.IsReg(it.Mode) && dataEnd > Units(it.FileSize)) _r.Add(FindingKind.Structure, where, $"written extents reach {dataEnd}, beyond the size {it.FileSize}");
        if (nbytes != it.Nbytes) Fix(where, $"nbytes {it.Nbytes}, extents add up to {nbytes}", ino, i => i.Item.Nbytes = nbytes);
    }

    private ulong Units(ulong size) => (size + _sb.BlockSize - 1) / _sb.BlockSize * _sb.BlockSize;

    private void CheckReachable(ulong root)
    {
        var children = _dirIndex.Where(kv => !kv.Value.Subvol).GroupBy(kv => kv.Key.Dir).ToDictionary(g => g.Key, g => g.Select(kv => kv.Value.Child).ToList());
        var seen = new HashSet<ulong> { root };
        var stack = new Stack<ulong>();
        stack.Push(root);
        while (stack.Count > 0)
        {
            var d = stack.Pop();
            foreach (var c in children.GetValueOrDefault(d) ?? new())
                if (seen.Add(c) && _inodes.TryGetValue(c, out var ci) && Mode.IsDir(ci.Mode)) stack.Push(c);
        }
        foreach (var (ino, it) in _inodes)
            if (!seen.Contains(ino) && it.Nlink > 0 && !_orphans.Contains(ino))
                _r.Add(FindingKind.Structure, InodeWhere(ino), "not reachable from the root directory");
    }
}
