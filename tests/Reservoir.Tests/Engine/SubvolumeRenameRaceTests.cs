using Reservoir.Common;
using Reservoir.Engine;
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
        UnderScheduler(12, () => new MountOptions { CommitIntervalMs = 5 }, (seed, s, fs, failures) =>
        {
            var snaps = new List<ulong>();
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
    }

    /// <summary>
    /// `subvolume list` and `subvolume show` while subvolumes move, the directories above them
    /// are renamed and subvolumes come and go, under the scheduler. A path is read one tree at a
    /// time, so a move between two steps left the walk at a directory no longer there, and the
    /// listing answered EIO and logged the image as damaged (found by `explore --quota-groups`,
    /// seed 300109, whose membership thread lists subvolumes). Every listing must answer, and
    /// name each subvolume by one of the paths it really had.
    /// </summary>
    [Fact]
    public void ListingSubvolumesWhileTheyAndTheirDirectoriesMoveAlwaysAnswers()
    {
        int listed = 0;
        UnderScheduler(12, () => new MountOptions { CommitIntervalMs = 5 }, (seed, s, fs, failures) =>
        {
            Ok(fs.CreateSubvolume(Root, "p", 0, 0, out var p));
            Ok(fs.Mkdir(p.Ino, "a", 0x1ED, 0, 0, out var a));
            Ok(fs.Mkdir(p.Ino, "b", 0x1ED, 0, 0, out var b));
            Ok(fs.Mkdir(a.Ino, "d", 0x1ED, 0, 0, out var d));
            Ok(fs.CreateSubvolume(d.Ino, "inner", 0, 0, out var inner));
            ulong innerId = Reservoir.Engine.Inodes.NodeIds.Decode(inner.Ino).TreeId;
            var innerPaths = new[] { "p/a/d/inner", "p/b/d/inner", "p/a/d/moved", "p/b/d/moved" };
            void Check(string what, Errno e) { if (e != Errno.OK) lock (failures) failures.Add($"{what}: {e}"); }
            var dirs = s.Start("dir-renamer", () =>
            {
                // d, holding the subvolume, goes from a to b and back.
                for (int i = 0; i < 10; i++)
                    Check($"rename d {i}", i % 2 == 0 ? fs.Rename(a.Ino, "d", b.Ino, "d") : fs.Rename(b.Ino, "d", a.Ino, "d"));
            });
            var subvolumes = s.Start("subvolume-renamer", () =>
            {
                // The subvolume itself is renamed within d, wherever d is.
                for (int i = 0; i < 10; i++)
                    Check($"rename inner {i}", i % 2 == 0 ? fs.Rename(d.Ino, "inner", d.Ino, "moved") : fs.Rename(d.Ino, "moved", d.Ino, "inner"));
            });
            var other = s.Start("other", () =>
            {
                for (int i = 0; i < 3; i++)
                {
                    Check($"create {i}", fs.CreateSubvolume(d.Ino, $"o{i}", 0, 0, out _));
                    Check($"delete {i}", fs.DeleteSubvolume(d.Ino, $"o{i}"));
                }
            });
            var lister = s.Start("lister", () =>
            {
                for (int i = 0; i < 12; i++)
                {
                    var e = fs.ListSubvolumes(out var list);
                    Check($"list {i}", e);
                    if (e == Errno.OK && list.SingleOrDefault(x => x.Id == innerId) is { Id: not 0 } x && !innerPaths.Contains(x.Path))
                        lock (failures) failures.Add($"list {i}: the subvolume listed at {x.Path}, where it never was");
                    if (e == Errno.OK) Interlocked.Increment(ref listed);
                    e = fs.ShowSubvolume(inner.Ino, out var shown);
                    Check($"show {i}", e);
                    if (e == Errno.OK && !innerPaths.Contains(shown.Path)) lock (failures) failures.Add($"show {i}: {shown.Path}");
                }
            });
            dirs.Join();
            subvolumes.Join();
            other.Join();
            lister.Join();
            if (fs.Fs.Warnings.Count > 0) failures.Add("warnings: " + string.Join("; ", fs.Fs.Warnings.Take(2)));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
        });
        Assert.True(listed > 0);
    }
}
