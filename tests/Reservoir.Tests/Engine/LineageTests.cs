using Reservoir.Engine.Quota;
using Xunit;

namespace Reservoir.Tests.Engine;

/// <summary>The snapshot lineage's walk of candidates (docs/SNAPSHOTS.md §3) and its pruning by id.</summary>
public class LineageTests
{
    private static List<ulong> Walk(Lineage l, ulong root, ulong since, ulong bound = ulong.MaxValue)
    {
        var w = new Lineage.DescendantWalk(l);
        w.Start(root, since);
        var list = new List<ulong>();
        while (w.Next(out ulong c, bound)) list.Add(c);
        return list;
    }

    [Fact]
    public void TheWalkGoesDepthFirstInTheOrderTakenAndTheBoundDropsOnlyHigherIds()
    {
        var l = new Lineage();
        // 256 ─┬ 257 (t 10) ── 259 (t 12)
        //      ├ 258 (t 11) ── 261 (t 14)
        //      └ 260 (t 13)
        l.Add(257, 256, 10);
        l.Add(258, 256, 11);
        l.Add(259, 257, 12);
        l.Add(260, 256, 13);
        l.Add(261, 258, 14);
        Assert.True(l.IdsFollowCreation);
        Assert.Equal([257, 259, 258, 261, 260], Walk(l, 256, 0));
        Assert.Equal([258, 261, 260], Walk(l, 256, 11));
        // 259 is above 258 but reached before it: only the rest of a list past the bound goes.
        Assert.Equal([257, 258], Walk(l, 256, 0, bound: 258));
        Assert.Equal([257, 259, 258], Walk(l, 256, 0, bound: 259));
        Assert.Empty(Walk(l, 256, 0, bound: 256));
    }

    [Fact]
    public void IdsThatDoNotFollowCreationTurnThePruningOff()
    {
        var l = new Lineage();
        l.Add(300, 256, 10);
        l.Add(290, 256, 11); // taken later with a lower id: not how ids are handed out
        Assert.False(l.IdsFollowCreation);
        Assert.Equal([300, 290], Walk(l, 256, 0, bound: 295));
    }
}
