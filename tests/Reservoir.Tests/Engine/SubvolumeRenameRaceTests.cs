using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// A nested subvolume renamed round between two directories of its parent and the top level (and
/// exchanged with a subvolume of the top level, there and back) while the
/// parent is snapshotted and another subvolume comes and goes beside it, under the seeded
/// deterministic scheduler. A snapshot reads its source's ROOT_REFs before it copies the
/// tree and then removes the nested subvolumes' entries from the copy by the names those
/// give; a rename between the two would leave it a name that is no longer there (the snapshot
/// fails, or keeps an entry naming a subvolume it has no ROOT_REF for), which is why a
/// subvolume's rename takes SubvolumeOps. Every snapshot must hold none of the nested
/// entries, every operation must succeed, and fsck must find the image clean.
/// </summary>
public class SubvolumeRenameRaceTests
{
    private const ulong Root = Filesystem.RootIno;

    [Fact]
    public void RenamesOfANestedSubvolumeAndSnapshotsOfItsParentInterleaveCleanly()
    {
        for (int seed = 1; seed <= 12; seed++)
        {
            var s = new DeterministicScheduler(seed, seed % 2 == 0 ? ScheduleStrategy.Pct : ScheduleStrategy.RandomWalk);
            var dev = new MemoryBlockDevice(128UL << 20);
            var failures = new List<string>();
            var snaps = new List<ulong>();
            s.Run(() =>
            {
                Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, s);
                using var fs = Filesystem.Mount(dev, new MountOptions { Scheduler = s, CommitIntervalMs = 5 }, new DataOptions());
                Ok(fs.CreateSubvolume(Root, "p", 0, 0, out var p));
                Ok(fs.Mkdir(p.Ino, "a", 0x1ED, 0, 0, out var a));
                Ok(fs.Mkdir(p.Ino, "b", 0x1ED, 0, 0, out var b));
                Ok(fs.CreateSubvolume(a.Ino, "inner", 0, 0, out var inner));
                Ok(fs.CreateSubvolume(Root, "side", 0, 0, out var side));
                void Check(string what, Errno e) { if (e != Errno.OK) lock (failures) failures.Add($"{what}: {e}"); }
                var renamer = s.Start("renamer", () =>
                {
                    // a/inner → b/moved ⇄ the top level's subvolume "side" (RENAME_EXCHANGE, there
                    // and back) → the top level's "out" (another subvolume) → a/inner …
                    for (int i = 0; i < 15; i++)
                        Check($"rename {i}", (i % 5) switch
                        {
                            0 => fs.Rename(a.Ino, "inner", b.Ino, "moved"),
                            1 => fs.Rename(b.Ino, "moved", Root, "side", RenameFlags.Exchange),
                            2 => fs.Rename(Root, "side", b.Ino, "moved", RenameFlags.Exchange),
                            3 => fs.Rename(b.Ino, "moved", Root, "out"),
                            _ => fs.Rename(Root, "out", a.Ino, "inner"),
                        });
                });
                var snapshotter = s.Start("snapshotter", () =>
                {
                    for (int i = 0; i < 4; i++)
                    {
                        var e = fs.CreateSnapshot(p.Ino, Root, $"snap{i}", readOnly: true, out var snap);
                        Check($"snapshot {i}", e);
                        if (e == Errno.OK) lock (snaps) snaps.Add(snap.Ino);
                    }
                });
                var other = s.Start("other", () =>
                {
                    for (int i = 0; i < 3; i++)
                    {
                        Check($"create {i}", fs.CreateSubvolume(b.Ino, $"o{i}", 0, 0, out _));
                        Check($"delete {i}", fs.DeleteSubvolume(b.Ino, $"o{i}"));
                    }
                });
                renamer.Join();
                snapshotter.Join();
                other.Join();
                // The snapshots leave every nested subvolume out: a and b are empty in each.
                foreach (var snap in snaps)
                    foreach (var d in new[] { "a", "b" })
                    {
                        Ok(fs.Lookup(snap, d, out var sd));
                        var names = DirNames(fs, sd.Ino).Where(n => n is not "." and not "..").ToList();
                        if (names.Count > 0) failures.Add($"snapshot {snap:x}/{d} holds {string.Join(",", names)}");
                    }
                // Fifteen renames: back where they started.
                Ok(fs.Lookup(a.Ino, "inner", out var back));
                Ok(fs.Lookup(Root, "side", out var sideBack));
                if ((back.Ino, sideBack.Ino) != (inner.Ino, side.Ino)) failures.Add("the subvolumes did not come back to their names");
                Ok(fs.SyncSubvolumeDeletions());
                Ok(fs.Sync());
            });
            Assert.True(failures.Count == 0, $"seed {seed}: {string.Join("; ", failures)}");
            FsckAssert.Clean(dev);
        }
    }
}
