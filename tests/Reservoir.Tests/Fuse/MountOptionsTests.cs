using Reservoir.Engine.Tx;
using Reservoir.Fuse.Session;
using Xunit;

namespace Reservoir.Tests.Fuse;

/// <summary>The discard options as btrfs takes them: plain discard is discard=sync, the last
/// one given wins, and a mode btrfs does not have is refused (reported as unknown).</summary>
public class MountOptionsTests
{
    [Theory]
    [InlineData("discard", DiscardMode.Sync)]
    [InlineData("discard=sync", DiscardMode.Sync)]
    [InlineData("discard=async", DiscardMode.Async)]
    [InlineData("discard=async,nodiscard", DiscardMode.Off)]
    [InlineData("nodiscard,discard=async", DiscardMode.Async)]
    [InlineData("noatime", DiscardMode.Off)]
    public void DiscardModesParseAsBtrfsNamesThem(string given, DiscardMode want)
    {
        var o = new FuseMountOptions();
        Assert.Empty(o.Parse(given));
        Assert.Equal(want, o.Discard);
        Assert.Equal(want, o.EngineOptions().Discard);
    }

    [Fact]
    public void AnUnknownDiscardModeIsRefused()
    {
        var o = new FuseMountOptions();
        Assert.Equal(["discard=later"], o.Parse("discard=later"));
        Assert.Equal(DiscardMode.Off, o.Discard);
    }

    /// <summary>cache=SIZE sets the daemon's page cache budget; without it the engine's
    /// default holds; a size below the minimum or not a size is refused as unknown, so the
    /// mount stops with a message instead of running with a budget nobody asked for.</summary>
    [Theory]
    [InlineData("cache=64M", 64L << 20)]
    [InlineData("cache=1G", 1L << 30)]
    [InlineData("cache=1048576", 1L << 20)]
    [InlineData("noatime", 256L << 20)]
    public void CacheSetsThePageCacheBudget(string given, long want)
    {
        var o = new FuseMountOptions();
        Assert.Empty(o.Parse(given));
        Assert.Equal(want, o.DataOptions().PageCacheBytes);
    }

    [Theory]
    [InlineData("cache=16k")]
    [InlineData("cache=lots")]
    [InlineData("cache=")]
    [InlineData("cache=-5M")]
    public void ACacheTooSmallOrNotASizeIsRefused(string given)
    {
        var o = new FuseMountOptions();
        Assert.Equal([given], o.Parse(given));
        Assert.Null(o.CacheBytes);
    }
}
