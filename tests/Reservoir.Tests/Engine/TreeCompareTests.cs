using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// The comparison of two snapshots' trees that an incremental send starts from
/// (<see cref="Filesystem.ChangedInodes"/>): the inodes it names are exactly those whose items
/// differ when every item of both trees is read and compared, whatever changed between them;
/// what the snapshots share is not read; and an inode's names come back from its INODE_REFs and
/// INODE_EXTREFs.
/// </summary>
public sealed class TreeCompareTests
{
    private const ulong Root = Filesystem.RootIno;

    /// <summary>Every item of a subvolume's tree, read one by one.</summary>
    private static SortedDictionary<Key, byte[]> Items(Filesystem fs, ulong tree)
    {
        var t = fs.Fs.FsTree(tree)!;
        var all = new SortedDictionary<Key, byte[]>();
        using var lk = t.Lock.Read();
        var path = new TreePath();
        for (bool ok = t.SeekGE(Key.Min, path); ok; ok = t.Next(path)) all[path.Key] = path.Data.ToArray();
        return all;
    }

    /// <summary>The inodes whose items differ, by reading everything.</summary>
    private static List<ulong> ChangedByReadingAll(Filesystem fs, ulong older, ulong newer)
    {
        var a = Items(fs, older);
        var b = Items(fs, newer);
        var changed = new SortedSet<ulong>();
        foreach (var (k, v) in a)
            if (!b.TryGetValue(k, out var w) || !v.AsSpan().SequenceEqual(w)) changed.Add(k.ObjectId);
        foreach (var k in b.Keys)
            if (!a.ContainsKey(k)) changed.Add(k.ObjectId);
        return changed.Where(o => o >= Root && o <= NodeIds.MaxIno).ToList();
    }

    private static ulong Snapshot(Filesystem fs, ulong source, string name)
    {
        Ok(fs.CreateSnapshot(source, Root, name, readOnly: true, out var s), "snapshot " + name);
        return NodeIds.Decode(s.Ino).TreeId;
    }

    private sealed class Changer(Filesystem fs, ulong sv, Random rng)
    {
        private readonly List<ulong> _dirs = [sv];
        private readonly List<(ulong Dir, string Name)> _files = [];
        private int _n;

        public void Fill(int count)
        {
            for (int i = 0; i < count; i++)
            {
                if (rng.Next(10) == 0)
                {
                    Ok(fs.Mkdir(Pick(_dirs), $"d{_n++}", 0x1ED, 0, 0, out var d));
                    _dirs.Add(d.Ino);
                }
                else NewFile();
            }
        }

        private T Pick<T>(List<T> l) => l[rng.Next(l.Count)];

        private void NewFile()
        {
            ulong dir = Pick(_dirs);
            string name = $"f{_n++}";
            var data = new byte[rng.Next(3) == 0 ? rng.Next(1, 900) : rng.Next(4096, 20_000)];
            rng.NextBytes(data);
            CreateFile(fs, dir, name, data);
            _files.Add((dir, name));
        }

        private ulong Ino((ulong Dir, string Name) f)
        {
            Ok(fs.Lookup(f.Dir, f.Name, out var a), "lookup " + f.Name);
            return a.Ino;
        }

        public void Change(int count)
        {
            for (int i = 0; i < count && _files.Count > 0; i++)
            {
                int k = rng.Next(_files.Count);
                var f = _files[k];
                switch (rng.Next(7))
                {
                    case 0:
                        var b = new byte[rng.Next(1, 9000)];
                        rng.NextBytes(b);
                        Ok(fs.Write(Ino(f), (ulong)rng.Next(30_000), b, out _));
                        break;
                    case 1:
                        Ok(fs.Unlink(f.Dir, f.Name));
                        _files.RemoveAt(k);
                        break;
                    case 2:
                        ulong to = Pick(_dirs);
                        string name = $"r{_n++}";
                        Ok(fs.Rename(f.Dir, f.Name, to, name));
                        _files[k] = (to, name);
                        break;
                    case 3:
                        Ok(fs.SetXattr(Ino(f), "user.k", [(byte)rng.Next(256)]));
                        break;
                    case 4:
                        Ok(fs.SetAttr(Ino(f), new SetAttrRequest { Mask = SetAttrMask.Mode, Mode = (uint)(0x8000 | rng.Next(0x200)) }, out _));
                        break;
                    case 5:
                        ulong dir = Pick(_dirs);
                        string link = $"l{_n++}";
                        Ok(fs.Link(Ino(f), dir, link, out _));
                        _files.Add((dir, link));
                        break;
                    default:
                        NewFile();
                        break;
                }
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public void TheChangedInodesAreThoseWhoseItemsDiffer(int seed)
    {
        var dev = NewDevice(256UL << 20);
        var rng = new Random(seed);
        using (var fs = Mount(dev))
        {
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            var c = new Changer(fs, sv.Ino, rng);
            c.Fill(rng.Next(1500, 2500));
            ulong older = Snapshot(fs, sv.Ino, "s0");
            for (int round = 1; round <= 3; round++)
            {
                // From one change to hundreds: a few leaves differ, or most of them.
                c.Change(round switch { 1 => 1, 2 => rng.Next(2, 20), _ => rng.Next(100, 400) });
                ulong newer = Snapshot(fs, sv.Ino, $"s{round}");
                var want = ChangedByReadingAll(fs, older, newer);
                Assert.NotEmpty(want);
                Ok(fs.ChangedInodes(older, newer, out var got));
                Assert.Equal(want, got.Inodes);
                Ok(fs.ChangedInodes(newer, older, out var back));
                Assert.Equal(want, back.Inodes);
                older = newer;
            }
            Assert.True(fs.Fs.FsTree(older)!.Height >= 3, "the test wants trees with internal nodes");
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void WhatTwoSnapshotsShareIsNotRead()
    {
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        for (int i = 0; i < 3000; i++) CreateFile(fs, sv.Ino, $"f{i:D4}", new byte[100]);
        ulong older = Snapshot(fs, sv.Ino, "s0");
        Ok(fs.Lookup(sv.Ino, "f1500", out var f));
        Ok(fs.Write(f.Ino, 0, new byte[] { 1, 2, 3 }, out _));
        ulong newer = Snapshot(fs, sv.Ino, "s1");
        var t = fs.Fs.FsTree(newer)!;
        Assert.True(t.Height >= 3, $"height {t.Height}");

        Ok(fs.ChangedInodes(older, newer, out var changes));
        // Only the file's own items changed (a write moves its times, not its directory's).
        Assert.Equal([NodeIds.Decode(f.Ino).Ino], changes.Inodes);
        // One path down each tree where they differ, and the siblings beside it: not the
        // hundreds of leaves 3,000 files take.
        int leaves = Items(fs, newer).Count / 20;
        Assert.True(changes.NodesRead <= 6 * t.Height, $"read {changes.NodesRead} nodes of trees {t.Height} high with about {leaves} leaves or more");
    }

    [Fact]
    public void OnlyReadOnlySubvolumesCompare()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        ulong ro = Snapshot(fs, sv.Ino, "s0");
        Assert.Equal(Errno.EINVAL, fs.ChangedInodes(ro, NodeIds.Decode(sv.Ino).TreeId, out _));
        Assert.Equal(Errno.ENOENT, fs.ChangedInodes(ro, 999, out _));
        Ok(fs.ChangedInodes(ro, ro, out var none));
        Assert.Empty(none.Inodes);
    }

    [Fact]
    public void AnInodesNamesComeFromItsReferences()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        Ok(fs.Mkdir(sv.Ino, "a", 0x1ED, 0, 0, out var a));
        Ok(fs.Mkdir(sv.Ino, "b", 0x1ED, 0, 0, out var b));
        ulong f = CreateFile(fs, a.Ino, "one");
        var want = new List<(ulong, string)> { (a.Ino, "one"), (b.Ino, "two") };
        Ok(fs.Link(f, b.Ino, "two", out _));
        // More names in one directory than its INODE_REF item holds in a 4 KiB leaf: the rest
        // go to INODE_EXTREFs.
        for (int i = 0; i < 400; i++)
        {
            string n = $"link-with-a-long-name-{i:D4}";
            Ok(fs.Link(f, b.Ino, n, out _), n);
            want.Add((b.Ino, n));
        }
        Ok(fs.InodeNames(f, out var names));
        Assert.Equal(want.OrderBy(x => x.Item2, StringComparer.Ordinal), names.OrderBy(x => x.Name, StringComparer.Ordinal));
        Assert.Contains(Items(fs, NodeIds.Decode(sv.Ino).TreeId).Keys, k => k.ObjectId == NodeIds.Decode(f).Ino && k.Type == KeyTypes.InodeExtref);
        Ok(fs.InodeNames(a.Ino, out var dirNames));
        Assert.Equal([(sv.Ino, "a")], dirNames);
        Ok(fs.InodeNames(sv.Ino, out var rootNames));
        Assert.Empty(rootNames); // a subvolume's name is in its parent's tree
        Ok(fs.Unlink(a.Ino, "one"));
        Ok(fs.InodeNames(f, out var after));
        Assert.DoesNotContain(after, x => x.Name == "one");
        Assert.Equal(401, after.Count);
        Assert.Equal(Errno.ENOENT, fs.InodeNames(NodeIds.Encode(NodeIds.Decode(sv.Ino).TreeId, 9999), out _));
    }
}
