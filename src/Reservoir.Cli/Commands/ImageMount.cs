using Reservoir.Device;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>A filesystem mounted on an image for one offline command. Disposing unmounts first
/// and closes the image after: the unmount still writes (its last commit and the clean
/// superblock), so the device must outlive it.</summary>
internal sealed class ImageMount(Filesystem fs, FileBlockDevice dev) : IDisposable
{
    public Filesystem Fs { get; } = fs;

    public void Dispose()
    {
        try { Fs.Dispose(); }
        finally { dev.Dispose(); }
    }
}
