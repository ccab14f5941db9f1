using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;

namespace Reservoir.Bench;

/// <summary>What the engine benchmarks share: a scratch image mounted for one round, files
/// made in a directory, and a step that must succeed.</summary>
internal static class BenchFs
{
    /// <summary>Formats a scratch image of <paramref name="size"/> bytes in the temporary
    /// directory, mounts it, runs <paramref name="body"/> and deletes the image.</summary>
    public static T OnScratchImage<T>(string name, ulong size, MountOptions options, DataOptions data, Func<Filesystem, T> body)
    {
        string img = Path.Combine(Path.GetTempPath(), $"bench-{name}-{Environment.ProcessId}.img");
        try
        {
            using var dev = FileBlockDevice.Create(img, size);
            Filesystem.Format(dev);
            using var fs = Filesystem.Mount(dev, options, data);
            return body(fs);
        }
        finally { File.Delete(img); }
    }

    /// <summary><paramref name="count"/> files f0, f1, … in <paramref name="dir"/>, each
    /// holding <paramref name="data"/>; their inode numbers.</summary>
    public static ulong[] CreateFiles(Filesystem fs, ulong dir, int count, byte[] data)
    {
        var files = new ulong[count];
        for (int i = 0; i < count; i++)
        {
            Check(fs.Create(dir, $"f{i}", 0x1A4, 0, 0, out var a));
            Check(fs.Write(a.Ino, 0, data, out _));
            files[i] = a.Ino;
        }
        return files;
    }

    /// <summary>The median (the mean of the middle two for an even count).</summary>
    public static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToList();
        return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
    }

    public static void Check(Errno e)
    {
        if (e != Errno.OK) throw new IOException($"benchmark step failed: {e}");
    }
}
