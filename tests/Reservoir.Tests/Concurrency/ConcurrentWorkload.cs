using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Tests.Concurrency;

/// <summary>
/// A workload for several threads: each owns a directory whose final content it can predict
/// alone (checked against its own model), and all of them also create, rename and delete in one
/// shared directory, where only errno plausibility is checked.
/// </summary>
internal sealed class ConcurrentWorkload(Filesystem fs, int workers, int opsPerWorker, int seed)
{
    public readonly Dictionary<string, byte[]>[] Models = Enumerable.Range(0, workers).Select(_ => new Dictionary<string, byte[]>()).ToArray();
    public ulong SharedDir;
    public ulong[] OwnDirs = new ulong[workers];

    public void Setup()
    {
        TestFs.Ok(fs.Mkdir(Filesystem.RootIno, "shared", 0x1ED, 0, 0, out var s));
        SharedDir = s.Ino;
        for (int w = 0; w < workers; w++)
        {
            TestFs.Ok(fs.Mkdir(Filesystem.RootIno, "w" + w, 0x1ED, 0, 0, out var d));
            OwnDirs[w] = d.Ino;
        }
    }

    public void Worker(int w)
    {
        var rng = new Random(seed * 1000 + w);
        var model = Models[w];
        ulong dir = OwnDirs[w];
        for (int i = 0; i < opsPerWorker; i++)
        {
            string name = "f" + rng.Next(8);
            int op = rng.Next(100);
            if (op < 30)
            {
                var data = new byte[rng.Next(1, 20_000)];
                rng.NextBytes(data);
                var e = fs.Lookup(dir, name, out var a);
                if (e == Errno.ENOENT) { TestFs.Ok(fs.Create(dir, name, 0x1A4, 0, 0, out a), "create"); model[name] = []; }
                else TestFs.Ok(e, "lookup");
                int off = rng.Next(0, model[name].Length + 1);
                TestFs.Ok(fs.Write(a.Ino, (ulong)off, data, out _), "write");
                var cur = model[name];
                if (off + data.Length > cur.Length) { var nd = new byte[off + data.Length]; cur.CopyTo(nd, 0); cur = nd; }
                data.CopyTo(cur, off);
                model[name] = cur;
            }
            else if (op < 40)
            {
                var e = fs.Unlink(dir, name);
                if (model.Remove(name)) TestFs.Ok(e, "unlink"); else Check(e == Errno.ENOENT, $"unlink of missing: {e}");
            }
            else if (op < 50)
            {
                string to = "f" + rng.Next(8);
                var e = fs.Rename(dir, name, dir, to);
                if (!model.ContainsKey(name)) { Check(e == Errno.ENOENT, $"rename missing: {e}"); continue; }
                TestFs.Ok(e, "rename");
                if (to != name) { model[to] = model[name]; model.Remove(name); }
            }
            else if (op < 75)
            {
                // Shared directory: anything may have happened to the name meanwhile.
                string sn = "s" + rng.Next(6);
                Errno e = rng.Next(4) switch
                {
                    0 => fs.Create(SharedDir, sn, 0x1A4, 0, 0, out _),
                    1 => fs.Unlink(SharedDir, sn),
                    2 => fs.Rename(SharedDir, sn, OwnDirs[rng.Next(OwnDirs.Length)] == dir ? SharedDir : SharedDir, "s" + rng.Next(6)),
                    _ => fs.Mkdir(SharedDir, sn, 0x1ED, 0, 0, out _),
                };
                Check(e is Errno.OK or Errno.EEXIST or Errno.ENOENT or Errno.EISDIR or Errno.ENOTDIR or Errno.ENOTEMPTY, $"shared op: {e}");
                if (rng.Next(3) == 0) { var re = fs.Rmdir(SharedDir, sn); Check(re is Errno.OK or Errno.ENOENT or Errno.ENOTDIR or Errno.ENOTEMPTY, $"rmdir: {re}"); }
            }
            else if (op < 80) TestFs.Ok(fs.Fsync(dir), "fsync");
            else
            {
                if (!model.TryGetValue(name, out var want)) continue;
                TestFs.Ok(fs.Lookup(dir, name, out var a), "lookup for read");
                var got = TestFs.ReadAll(fs, a.Ino);
                Check(got.AsSpan().SequenceEqual(want), $"worker {w}: {name} content differs");
            }
        }
    }

    public void Verify()
    {
        for (int w = 0; w < workers; w++)
        {
            TestFs.Ok(fs.ListDir(OwnDirs[w], out var entries));
            var names = entries.Select(e => e.Name).OrderBy(x => x).ToList();
            Check(names.SequenceEqual(Models[w].Keys.OrderBy(x => x)), $"worker {w} directory: [{string.Join(",", names)}] vs model [{string.Join(",", Models[w].Keys.OrderBy(x => x))}]");
            foreach (var e in entries)
                Check(TestFs.ReadAll(fs, e.Ino).AsSpan().SequenceEqual(Models[w][e.Name]), $"worker {w}: {e.Name} content differs");
        }
    }

    private static void Check(bool ok, string msg)
    {
        if (!ok) throw new Xunit.Sdk.XunitException(msg);
    }
}
