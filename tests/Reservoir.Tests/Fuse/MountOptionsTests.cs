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
}
