using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// The early accounting's worker (docs/SNAPSHOTS.md §3, "Early accounting") working out extents
/// while writers keep changing them, under the seeded deterministic scheduler: a subvolume and a
/// writable snapshot of it rewrite and delete the same files (each shared extent let go of by
/// both, in either order, in one transaction or two), a third thread takes snapshots now and
/// then (which leaves a transaction's early work unused) and commits with a rescan, whose
/// recount from the trees must change no group's numbers. An answer found before an extent
/// changed again must not be taken (the ledger's version check), and one taken must leave the
/// sums when its extent changes; fsck recounts everything at the end.
/// </summary>
public class EarlyAccountingRaceTests
{
    private const ulong Root = Filesystem.RootIno;

    [Fact]
    public void AnswersFoundWhileWritersChangeTheirExtentsAreTakenOnlyWhileTheyHold()
    {
        long taken = 0, left = 0;
        UnderScheduler(16, () => new MountOptions { CommitIntervalMs = 0 }, (seed, s, fs, failures) =>
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            for (int i = 0; i < 6; i++) CreateFile(fs, sv.Ino, $"f{i}", Block(i, 3));
            Ok(fs.CreateSnapshot(sv.Ino, Root, "ro", readOnly: true, out _));
            Ok(fs.CreateSnapshot(sv.Ino, Root, "w", readOnly: false, out var w));
            Ok(fs.Sync());
            void Check(string what, Errno e) { if (e != Errno.OK) lock (failures) failures.Add($"{what}: {e}"); }
            void Writer(ulong dir, int salt)
            {
                var rng = new Random(seed * 31 + salt);
                for (int i = 0; i < 14; i++)
                {
                    string name = $"f{rng.Next(6)}";
                    if (fs.Lookup(dir, name, out var a) != Errno.OK) { CreateFile(fs, dir, name, Block(i, 2)); continue; }
                    if (rng.Next(5) == 0) Check($"unlink {name}", fs.Unlink(dir, name));
                    else
                    {
                        Check($"write {name}", fs.Write(a.Ino, 0, Block(i + salt, 1 + rng.Next(3)), out _));
                        // Written back now, so its extents change while the transaction runs.
                        if (rng.Next(2) == 0) Check($"fsync {name}", fs.Fsync(a.Ino, dataOnly: false));
                    }
                }
            }
            var a = s.Start("sv-writer", () => Writer(sv.Ino, 1));
            var b = s.Start("snapshot-writer", () => Writer(w.Ino, 2));
            var c = s.Start("snapshots-and-rescans", () =>
            {
                for (int i = 0; i < 4; i++)
                {
                    if (i == 2) Check("snapshot", fs.CreateSnapshot(sv.Ino, Root, $"s{i}", readOnly: true, out _));
                    Check("rescan", fs.RescanQuota(out int corrected));
                    if (corrected != 0) lock (failures) failures.Add($"rescan {i}: the recount changed {corrected} group(s)");
                }
            });
            a.Join();
            b.Join();
            c.Join();
            Check("final rescan", fs.RescanQuota(out int last));
            if (last != 0) failures.Add($"final rescan: the recount changed {last} group(s)");
            taken += fs.Fs.Stats.EarlyTaken;
            left += fs.Fs.Stats.EarlyLeftToCommit;
        });
        Assert.True(taken > 0, "no commit took an early answer: the test would not exercise them");
        Assert.True(left > 0, "the commits worked out nothing themselves");
    }

    /// <summary>
    /// The same race with groups above level 0, whose answers the early accounting works out
    /// too (FsInfo.EarlyGroups.cs): two read-only snapshots keep what the subvolume lets go of,
    /// A = {ro1, ro2} comes to hold it alone (the worker asks whether anyone outside A has it),
    /// B = {sv} stops referencing it (asks whether another member has it), C = {sv, ro1}
    /// neither; while the writers run, a third thread takes snapshots of sv (they join B and
    /// C), moves ro2 in and out of C and commits rescans. A membership changing under an
    /// answer must leave the transaction's answers to the commit (the stamp), and each recount
    /// must change no group's numbers; the worker must have asked the groups' questions.
    /// </summary>
    [Fact]
    public void GroupAnswersFoundWhileMembershipsChangeAreTakenOnlyWhileTheyHold()
    {
        long searches = 0, groupAnswers = 0;
        UnderScheduler(12, () => new MountOptions { CommitIntervalMs = 0 }, (seed, s, fs, failures) =>
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            for (int i = 0; i < 10; i++) CreateFile(fs, sv.Ino, $"f{i}", Block(i, 3));
            // Committed before the snapshots: an extent a snapshot takes in the transaction
            // that wrote it gets a SHARED_ROOT_REF, which is the commit's case.
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(sv.Ino, Root, "ro1", readOnly: true, out var ro1));
            Ok(fs.CreateSnapshot(sv.Ino, Root, "ro2", readOnly: true, out var ro2));
            Ok(fs.Sync());
            ulong Q(InodeAttr x) => QgroupId.Of(0, Reservoir.Engine.Inodes.NodeIds.Decode(x.Ino).TreeId);
            ulong ga = QgroupId.Of(1, 1), gb = QgroupId.Of(1, 2), gc = QgroupId.Of(1, 3);
            foreach (var g in (ulong[])[ga, gb, gc]) Ok(fs.CreateQgroup(g));
            foreach (var (child, parent) in (ValueTuple<ulong, ulong>[])[(Q(ro1), ga), (Q(ro2), ga), (Q(sv), gb), (Q(sv), gc), (Q(ro1), gc)])
                Ok(fs.AssignQgroup(child, parent));
            void Check(string what, Errno e) { if (e != Errno.OK) lock (failures) failures.Add($"{what}: {e}"); }
            var a = s.Start("sv-writer", () =>
            {
                // Mostly whole rewrites, so the snapshots' extents are let go of; a sync now
                // and then, which works out what the worker has not reached before committing.
                var rng = new Random(seed * 31);
                for (int i = 0; i < 24; i++)
                {
                    string name = $"f{rng.Next(10)}";
                    if (fs.Lookup(sv.Ino, name, out var f) != Errno.OK) { CreateFile(fs, sv.Ino, name, Block(i, 2)); continue; }
                    if (rng.Next(8) == 0) Check($"unlink {name}", fs.Unlink(sv.Ino, name));
                    else
                    {
                        Check($"write {name}", fs.Write(f.Ino, 0, Block(i + 7, rng.Next(4) == 0 ? 1 : 3), out _));
                        if (rng.Next(2) == 0) Check($"fsync {name}", fs.Fsync(f.Ino, dataOnly: false));
                    }
                    if (i % 6 == 5) Check("sync", fs.Sync());
                }
            });
            var c = s.Start("snapshots-memberships-rescans", () =>
            {
                for (int i = 0; i < 4; i++)
                {
                    if (i == 1) Check("snapshot", fs.CreateSnapshot(sv.Ino, Root, $"s{i}", readOnly: true, out _));
                    Check("ro2 in or out of C", fs.QgroupRelations().Contains((Q(ro2), gc)) ? fs.RemoveQgroupRelation(Q(ro2), gc) : fs.AssignQgroup(Q(ro2), gc));
                    Check("rescan", fs.RescanQuota(out int corrected));
                    if (corrected != 0) lock (failures) failures.Add($"rescan {i}: the recount changed {corrected} group(s)");
                }
            });
            a.Join();
            c.Join();
            Check("final rescan", fs.RescanQuota(out int last));
            if (last != 0) failures.Add($"final rescan: the recount changed {last} group(s)");
            searches += fs.Fs.Stats.EarlyGroupSearches;
            groupAnswers += fs.Fs.Stats.EarlyGroupAnswers;
        });
        Assert.True(groupAnswers > 0, "the early accounting answered for no extent let go of with groups");
        Assert.True(searches > 0, "the early accounting asked no group who else has an extent: the searches went unexercised");
    }

    private static byte[] Block(int seed, int blocks)
    {
        var d = new byte[blocks * 4096];
        new Random(seed).NextBytes(d);
        return d;
    }
}
