using System.Buffers.Binary;
using Reservoir.Api;
using Reservoir.Api.Send;
using Reservoir.Common;
using Xunit;

namespace Reservoir.Tests.Api;

/// <summary>
/// Receive against streams that are well framed (every crc right) but whose commands were
/// changed at random: attribute bytes flipped, values set to edge cases, commands dropped,
/// repeated or moved, attributes removed. A receive must either succeed or fail with an
/// <see cref="FsException"/> that says why, never with another exception (an index out of
/// range, a null reference), and the image must stay consistent (fsck clean) either way.
/// </summary>
public sealed class ReceiveFuzzTests
{
    private sealed record Cmd(ushort Type, List<(ushort Type, byte[] Value)> Attrs);

    private static List<Cmd> Parse(byte[] stream)
    {
        var cmds = new List<Cmd>();
        int p = SendStreamFormat.StreamHeaderSize;
        while (p < stream.Length)
        {
            int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(stream.AsSpan(p));
            ushort type = BinaryPrimitives.ReadUInt16LittleEndian(stream.AsSpan(p + 4));
            int q = p + SendStreamFormat.CommandHeaderSize, end = q + len;
            var attrs = new List<(ushort, byte[])>();
            while (q < end)
            {
                ushort t = BinaryPrimitives.ReadUInt16LittleEndian(stream.AsSpan(q));
                int l = BinaryPrimitives.ReadUInt16LittleEndian(stream.AsSpan(q + 2));
                attrs.Add((t, stream.AsSpan(q + 4, l).ToArray()));
                q += 4 + l;
            }
            cmds.Add(new Cmd(type, attrs));
            p = end;
        }
        return cmds;
    }

    /// <summary>Frames commands as a stream (header, lengths, crcs), whatever they say.</summary>
    private static byte[] Frame(List<Cmd> cmds)
    {
        var ms = new MemoryStream();
        var h = new byte[SendStreamFormat.StreamHeaderSize];
        SendStreamFormat.Magic.CopyTo(h);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(13), 1);
        ms.Write(h);
        foreach (var c in cmds)
        {
            int len = c.Attrs.Sum(a => 4 + a.Value.Length);
            var buf = new byte[SendStreamFormat.CommandHeaderSize + len];
            BinaryPrimitives.WriteUInt32LittleEndian(buf, (uint)len);
            BinaryPrimitives.WriteUInt16LittleEndian(buf.AsSpan(4), c.Type);
            int q = SendStreamFormat.CommandHeaderSize;
            foreach (var (t, v) in c.Attrs)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(buf.AsSpan(q), t);
                BinaryPrimitives.WriteUInt16LittleEndian(buf.AsSpan(q + 2), (ushort)v.Length);
                v.CopyTo(buf, q + 4);
                q += 4 + v.Length;
            }
            BinaryPrimitives.WriteUInt32LittleEndian(buf.AsSpan(6), SendStreamFormat.Crc(buf));
            ms.Write(buf);
        }
        return ms.ToArray();
    }

    private static byte[] Mutate(byte[] stream, Random rng)
    {
        var cmds = Parse(stream);
        int changes = rng.Next(1, 4);
        for (int k = 0; k < changes; k++)
        {
            int i = rng.Next(cmds.Count);
            var c = cmds[i];
            switch (rng.Next(8))
            {
                case 0: cmds.RemoveAt(i); break;
                case 1: cmds.Insert(rng.Next(cmds.Count + 1), c with { Attrs = [.. c.Attrs] }); break;
                case 2 when cmds.Count > 2: cmds.RemoveAt(i); cmds.Insert(rng.Next(cmds.Count + 1), c); break;
                case 3 when c.Attrs.Count > 0: c.Attrs.RemoveAt(rng.Next(c.Attrs.Count)); break;
                case 4 when c.Attrs.Count > 0:
                {
                    int a = rng.Next(c.Attrs.Count);
                    var v = c.Attrs[a].Value;
                    if (v.Length > 0) v[rng.Next(v.Length)] ^= (byte)(1 << rng.Next(8));
                    break;
                }
                case 5 when c.Attrs.Count > 0:
                {
                    // A number attribute to an edge: 0, all ones, just past 2^63, a huge offset.
                    int a = rng.Next(c.Attrs.Count);
                    if (c.Attrs[a].Value.Length == 8)
                    {
                        ulong[] edges = [0, ulong.MaxValue, 1UL << 63, (1UL << 62) + 7, 4095, 1UL << 40];
                        BinaryPrimitives.WriteUInt64LittleEndian(c.Attrs[a].Value, edges[rng.Next(edges.Length)]);
                    }
                    break;
                }
                case 6 when c.Attrs.Count > 0:
                {
                    // A path to a neighbour's, a dot, an empty one.
                    int a = c.Attrs.FindIndex(x => x.Type is 15 or 16 or 17 or 22);
                    if (a >= 0) c.Attrs[a] = (c.Attrs[a].Type, System.Text.Encoding.UTF8.GetBytes(rng.Next(3) switch { 0 => ".", 1 => "", _ => "d/./f" }));
                    break;
                }
                default:
                    cmds[i] = c with { Type = (ushort)rng.Next(1, 23) }; // another command with these attributes
                    break;
            }
        }
        return Frame(cmds);
    }

    private static byte[] Seed(bool incremental)
    {
        var dev = TestFs.NewDevice();
        using var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        fs.CreateSubvolume("/sv");
        fs.CreateDirectory("/sv/d");
        fs.WriteAllBytes("/sv/d/f", Enumerable.Range(0, 70_000).Select(i => (byte)i).ToArray());
        fs.CloneFile("/sv/d/f", "/sv/g");
        fs.CreateSymbolicLink("/sv/l", "d/f");
        TestFs.Ok(fs.Posix.SetXattr("/sv/g", "user.x", "1"u8));
        fs.CreateSnapshot("/sv", "/s1", readOnly: true);
        var ms = new MemoryStream();
        fs.Send("/s1", ms);
        if (!incremental) return ms.ToArray();
        fs.Move("/sv/d/f", "/sv/f2");
        fs.WriteAllText("/sv/d/new", "n");
        fs.CreateSnapshot("/sv", "/s2", readOnly: true);
        var inc = new MemoryStream();
        fs.Send("/s2", inc, parent: "/s1");
        return [.. ms.ToArray(), .. inc.ToArray()];
    }

    [Fact]
    public void MangledStreamsFailCleanlyAndLeaveAConsistentImage()
    {
        byte[][] seeds = [Seed(false), File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Fixtures", "btrfs-send-v1.stream"))];
        byte[] chained = Seed(true);
        int ok = 0, refused = 0;
        for (int i = 0; i < 300; i++)
        {
            var rng = new Random(i);
            var dev = TestFs.NewDevice(64UL << 20);
            using (var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
            {
                fs.CreateDirectory("/in");
                byte[] input;
                if (i % 3 == 2)
                {
                    // The full stream whole, then the incremental one mangled (its parent is there).
                    int split = FindSecondStream(chained);
                    fs.Receive(new MemoryStream(chained[..split]), "/in");
                    input = Mutate(chained[split..], rng);
                }
                else input = Mutate(seeds[i % 2], rng);
                try
                {
                    Receiver.Run(new MemoryStream(input), new ImageReceiveTarget(fs, "/in"));
                    ok++;
                }
                catch (FsException) { refused++; }
                catch (Exception ex)
                {
                    throw new Xunit.Sdk.XunitException($"case {i}: {ex.GetType().Name} instead of a clear refusal: {ex}");
                }
                fs.Sync();
            }
            var r = Reservoir.Engine.Check.Fsck.Run(dev, new Reservoir.Engine.Check.FsckOptions { CheckDataCsums = true });
            Assert.True(r.Clean, $"case {i}: fsck found problems:\n" + string.Join("\n", r.Errors.Take(10)));
        }
        Assert.True(refused > 50 && ok > 10, $"{ok} received, {refused} refused: the mutations are too mild or too harsh to test anything");
    }

    private static int FindSecondStream(byte[] s)
    {
        for (int p = 1; p + 13 <= s.Length; p++)
            if (s.AsSpan(p, 13).SequenceEqual(SendStreamFormat.Magic)) return p;
        throw new InvalidOperationException("one stream only");
    }
}
