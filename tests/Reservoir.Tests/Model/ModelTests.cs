using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Model;

/// <summary>
/// Random sequences of namespace and data operations on the engine and on <see cref="ModelFs"/>;
/// every errno is compared, and after each sequence (and at random points) the filesystem is
/// unmounted, remounted, compared entry by entry with the model, and checked by fsck.
/// </summary>
public class ModelTests(ITestOutputHelper log)
{
    private static readonly string[] Names = ["a", "b", "c", "d", "e", "f", "g", "h", "longer-name-" + new string('x', 40), "ü-utf8"];

    public static IEnumerable<object[]> Seeds() => Enumerable.Range(1, 16).Select(i => new object[] { i, i % 4 == 0 ? 16384 : 4096 });

    [Theory]
    [MemberData(nameof(Seeds))]
    public void RandomOperationsMatchModel(int seed, int nodeSize)
    {
        var r = new ModelRunner(seed, nodeSize, log);
        r.Run(ops: 700, remountEvery: 150);
    }

    internal sealed class ModelRunner(int seed, int nodeSize, ITestOutputHelper log)
    {
        private readonly Random _rng = new(seed);
        private readonly ModelFs _m = new();
        private MemoryBlockDevice _dev = null!;
        private Filesystem _fs = null!;
        public int OpsRun;

        public void Run(int ops, int remountEvery)
        {
            _dev = NewDevice(96UL << 20, nodeSize);
            _fs = Mount(_dev);
            try
            {
                for (int i = 0; i < ops; i++)
                {
                    Step(i);
                    OpsRun++;
                    if (_rng.Next(remountEvery) == 0) Remount();
                }
                Remount();
                Assert.Equal(0, _fs.Stats.ReservationOverruns);
                log.WriteLine($"seed {seed}: {OpsRun} operations, {_fs.Stats.Commits} commits");
            }
            finally { _fs.Dispose(); }
            FsckAssert.Clean(_dev);
        }

        private void Remount()
        {
            Ok(_fs.Sync());
            var v = _fs.VerifyReservations();
            Assert.True(v.Count == 0, $"seed {seed}: {string.Join("; ", v)}");
            _fs.Dispose();
            Assert.True(_fs.LeakedBytes == 0, $"seed {seed}: {string.Join("; ", _fs.LeakReports)}");
            FsckAssert.Clean(_dev);
            _fs = Mount(_dev);
            Compare(_m.Root, Filesystem.RootIno, "/");
        }

        private T Pick<T>(IList<T> l) => l[_rng.Next(l.Count)];
        private string Name() => Pick(Names);

        private void Expect(Errno want, Errno got, string what)
        {
            if (want != got) throw new Xunit.Sdk.XunitException($"seed {seed}: {what}: model says {want}, engine says {got}");
        }

        private void Step(int i)
        {
            var dirs = _m.AllDirs().ToList();
            var dir = Pick(dirs);
            string name = Name();
            dir.Children.TryGetValue(name, out var existing);
            int op = _rng.Next(100);
            string what = $"op {i} #{op} in {dir.Ino} '{name}'";
            if (op < 14) // create file
            {
                var e = _fs.Create(dir.Ino, name, 0x1A4, 0, 0, out var a);
                Expect(existing != null ? Errno.EEXIST : Errno.OK, e, what + " create");
                if (e == Errno.OK) dir.Children[name] = new MNode { Kind = 'f', Ino = a.Ino, Links = 1 };
            }
            else if (op < 22) // mkdir
            {
                var e = _fs.Mkdir(dir.Ino, name, 0x1ED, 0, 0, out var a);
                Expect(existing != null ? Errno.EEXIST : Errno.OK, e, what + " mkdir");
                if (e == Errno.OK) dir.Children[name] = new MNode { Kind = 'd', Ino = a.Ino, Parent = dir, Perm = 0x1ED | (dir.Perm & 0x400) }; // setgid dirs propagate
            }
            else if (op < 26) // symlink
            {
                string target = new string('t', _rng.Next(1, 300)) + "/" + name;
                var e = _fs.Symlink(dir.Ino, name, target, 0, 0, out var a);
                Expect(existing != null ? Errno.EEXIST : Errno.OK, e, what + " symlink");
                if (e == Errno.OK) dir.Children[name] = new MNode { Kind = 'l', Ino = a.Ino, Target = target, Links = 1, Perm = 0x1FF };
            }
            else if (op < 28) // fifo
            {
                var e = _fs.Mknod(dir.Ino, name, 0x1000 | 0x1A4, 0, 0, 0, out var a);
                Expect(existing != null ? Errno.EEXIST : Errno.OK, e, what + " mknod");
                if (e == Errno.OK) dir.Children[name] = new MNode { Kind = 'p', Ino = a.Ino, Links = 1 };
            }
            else if (op < 32) // hard link
            {
                var files = dirs.SelectMany(d => d.Children.Values).Where(n => !n.IsDir).Distinct().ToList();
                if (files.Count == 0) return;
                var f = Pick(files);
                var e = _fs.Link(f.Ino, dir.Ino, name, out _);
                Expect(existing != null ? Errno.EEXIST : Errno.OK, e, what + " link");
                if (e == Errno.OK) { dir.Children[name] = f; f.Links++; }
            }
            else if (op < 40) // unlink
            {
                var e = _fs.Unlink(dir.Ino, name);
                Expect(existing == null ? Errno.ENOENT : existing.IsDir ? Errno.EISDIR : Errno.OK, e, what + " unlink");
                if (e == Errno.OK) { dir.Children.Remove(name); existing!.Links--; }
            }
            else if (op < 45) // rmdir
            {
                var e = _fs.Rmdir(dir.Ino, name);
                Expect(existing == null ? Errno.ENOENT : !existing.IsDir ? Errno.ENOTDIR : existing.Children.Count > 0 ? Errno.ENOTEMPTY : Errno.OK, e, what + " rmdir");
                if (e == Errno.OK) dir.Children.Remove(name);
            }
            else if (op < 57) Rename(dirs, dir, name, existing, what);
            else if (op < 80) // write
            {
                if (existing is not { Kind: 'f' }) return;
                int off = _rng.Next(3) == 0 ? _rng.Next(0, 300_000) : _rng.Next(0, existing.Data.Length + 1);
                int len = _rng.Next(4) == 0 ? _rng.Next(1, 200_000) : _rng.Next(1, 9000);
                var data = new byte[len];
                _rng.NextBytes(data);
                var e = _fs.Write(existing.Ino, (ulong)off, data, out int n);
                Expect(Errno.OK, e, what + " write");
                Assert.Equal(len, n);
                if (off + len > existing.Data.Length) { var nd = new byte[off + len]; existing.Data.CopyTo(nd, 0); existing.Data = nd; }
                data.CopyTo(existing.Data, off);
                if (_rng.Next(4) == 0) Assert.Equal(existing.Data, ReadAll(_fs, existing.Ino));
            }
            else if (op < 87) // truncate
            {
                if (existing is not { Kind: 'f' }) return;
                int size = _rng.Next(3) == 0 ? 0 : _rng.Next(0, existing.Data.Length + 50_000);
                Expect(Errno.OK, _fs.Truncate(existing.Ino, (ulong)size), what + " truncate");
                var nd = new byte[size];
                Array.Copy(existing.Data, nd, Math.Min(size, existing.Data.Length));
                existing.Data = nd;
            }
            else if (op < 93) // xattr set/remove
            {
                if (existing == null) return;
                string xn = "user." + Name();
                if (_rng.Next(3) == 0)
                {
                    var e = _fs.RemoveXattr(existing.Ino, xn);
                    Expect(existing.Xattrs.ContainsKey(xn) ? Errno.OK : Errno.ENODATA, e, what + " removexattr");
                    existing.Xattrs.Remove(xn);
                }
                else
                {
                    var v = new byte[_rng.Next(0, 600)];
                    _rng.NextBytes(v);
                    var flags = (XattrSetFlags)_rng.Next(3);
                    bool has = existing.Xattrs.ContainsKey(xn);
                    var want = flags == XattrSetFlags.Create && has ? Errno.EEXIST : flags == XattrSetFlags.Replace && !has ? Errno.ENODATA : Errno.OK;
                    Expect(want, _fs.SetXattr(existing.Ino, xn, v, flags), what + " setxattr");
                    if (want == Errno.OK) existing.Xattrs[xn] = v;
                }
            }
            else if (op < 97) // chmod
            {
                if (existing == null) return;
                uint perm = (uint)_rng.Next(0, 0x1000);
                Expect(Errno.OK, _fs.SetAttr(existing.Ino, new SetAttrRequest { Mask = SetAttrMask.Mode, Mode = perm }, out var a), what + " chmod");
                existing.Perm = perm;
                Assert.Equal(perm, a.Mode & 0xFFF);
            }
            else // read a range and compare
            {
                if (existing is not { Kind: 'f' }) return;
                int off = _rng.Next(0, existing.Data.Length + 10);
                var buf = new byte[_rng.Next(1, 70_000)];
                Expect(Errno.OK, _fs.Read(existing.Ino, (ulong)off, buf, out int n), what + " read");
                int want = Math.Max(0, Math.Min(buf.Length, existing.Data.Length - off));
                Assert.Equal(want, n);
                Assert.True(buf.AsSpan(0, n).SequenceEqual(existing.Data.AsSpan(Math.Min(off, existing.Data.Length), want)), $"seed {seed} {what}: read content differs");
            }
        }

        private void Rename(List<MNode> dirs, MNode od, string on, MNode? src, string what)
        {
            var nd = Pick(dirs);
            string nn = Name();
            nd.Children.TryGetValue(nn, out var tgt);
            var flags = _rng.Next(5) switch { 0 => RenameFlags.NoReplace, 1 => RenameFlags.Exchange, _ => RenameFlags.None };
            Errno want;
            if (src == null) want = Errno.ENOENT;
            else if (flags == RenameFlags.Exchange && tgt == null) want = Errno.ENOENT;
            else if (flags == RenameFlags.NoReplace && tgt != null) want = Errno.EEXIST;
            else if (tgt == src) want = Errno.OK;
            else if (od != nd && src.IsDir && ModelFs.IsAncestor(src, nd)) want = Errno.EINVAL;
            else if (flags == RenameFlags.Exchange && od != nd && tgt!.IsDir && ModelFs.IsAncestor(tgt, od)) want = Errno.EINVAL;
            else if (flags != RenameFlags.Exchange && tgt != null && tgt.IsDir && ModelFs.IsAncestor(tgt, od)) want = Errno.ENOTEMPTY;
            else if (flags != RenameFlags.Exchange && tgt != null && src.IsDir && !tgt.IsDir) want = Errno.ENOTDIR;
            else if (flags != RenameFlags.Exchange && tgt != null && !src.IsDir && tgt.IsDir) want = Errno.EISDIR;
            else if (flags != RenameFlags.Exchange && tgt != null && tgt.IsDir && tgt.Children.Count > 0) want = Errno.ENOTEMPTY;
            else want = Errno.OK;
            var e = _fs.Rename(od.Ino, on, nd.Ino, nn, flags);
            Expect(want, e, $"{what} rename {flags} -> {nd.Ino} '{nn}'");
            if (e != Errno.OK || tgt == src) return;
            if (flags == RenameFlags.Exchange)
            {
                od.Children[on] = tgt!;
                nd.Children[nn] = src!;
                if (src!.IsDir) src.Parent = nd;
                if (tgt!.IsDir) tgt.Parent = od;
                return;
            }
            if (tgt != null) tgt.Links--;
            od.Children.Remove(on);
            nd.Children[nn] = src!;
            if (src!.IsDir) src.Parent = nd;
        }

        private void Compare(MNode m, ulong ino, string path)
        {
            Ok(_fs.GetAttr(ino, out var a), path);
            string where = $"seed {seed}: {path} ({ModelFs.Describe(m)})";
            Assert.True(ModelFs.ExpectedNlink(m) == a.Nlink, $"{where}: nlink {a.Nlink}, model {ModelFs.ExpectedNlink(m)}");
            Assert.True(m.Perm == (a.Mode & 0xFFF), $"{where}: mode {a.Mode & 0xFFF:x}, model {m.Perm:x}");
            switch (m.Kind)
            {
                case 'd':
                    Assert.True(a.IsDir, where);
                    Ok(_fs.ListDir(ino, out var entries), path);
                    var names = entries.Select(e => e.Name).OrderBy(s => s, StringComparer.Ordinal).ToList();
                    Assert.True(m.Children.Keys.SequenceEqual(names), $"{where}: engine has [{string.Join(",", names)}]");
                    foreach (var e in entries)
                    {
                        var c = m.Children[e.Name];
                        Assert.True(c.Ino == e.Ino, $"{where}/{e.Name}: ino {e.Ino}, model {c.Ino}");
                        Compare(c, e.Ino, path + e.Name + (c.IsDir ? "/" : ""));
                    }
                    break;
                case 'f':
                    Assert.True(a.IsReg, where);
                    Assert.True((ulong)m.Data.Length == a.Size, $"{where}: size {a.Size}");
                    Assert.True(m.Data.AsSpan().SequenceEqual(ReadAll(_fs, ino)), $"{where}: content differs");
                    break;
                case 'l':
                    Ok(_fs.Readlink(ino, out string t), path);
                    Assert.Equal(m.Target, t);
                    break;
                case 'p':
                    Assert.Equal(0x1000u, a.Mode & 0xF000);
                    break;
            }
            Ok(_fs.ListXattr(ino, out var xs), path);
            Assert.True(m.Xattrs.Keys.SequenceEqual(xs.OrderBy(s => s, StringComparer.Ordinal)), $"{where}: xattrs [{string.Join(",", xs)}]");
            foreach (var (k, v) in m.Xattrs)
            {
                Ok(_fs.GetXattr(ino, k, out var got), path + " xattr " + k);
                Assert.Equal(v, got);
            }
        }
    }
}
