using Reservoir.Engine;

namespace Reservoir.Stress;

/// <summary>What any answer of find-new must be, whatever writers did meanwhile: in (inode,
/// file offset) order with no item twice (its batches and pages resume where the last ended),
/// nothing older than the generation asked, nothing newer than the running transaction.</summary>
internal static class FindNewCheck
{
    public static void Check(string subvolume, ulong since, IReadOnlyList<NewExtent> found, ulong newest)
    {
        for (int i = 0; i < found.Count; i++)
        {
            var x = found[i];
            if (x.Generation < since || x.Generation > newest)
                throw new InvalidOperationException($"find-new {subvolume} {since}: inode {x.Inode} at {x.FileOffset} has generation {x.Generation}");
            if (i > 0 && (found[i - 1].Inode, found[i - 1].FileOffset).CompareTo((x.Inode, x.FileOffset)) >= 0)
                throw new InvalidOperationException($"find-new {subvolume} {since}: inode {x.Inode} at {x.FileOffset} after inode {found[i - 1].Inode} at {found[i - 1].FileOffset}");
        }
    }
}
