using System.CommandLine;
using Reservoir.Cli.Commands;
using Reservoir.Common;

namespace Reservoir.Cli;

/// <summary>
/// `reservoir`: make, check, inspect and use Reservoir images. Invoked as `mkfs.reservoir` it
/// behaves as `reservoir mkfs`, and as `fsck.reservoir` as `reservoir fsck`. Every failure is
/// a message on stderr and a non-zero exit code, never an unhandled exception.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        string argv0 = Path.GetFileName(Environment.GetCommandLineArgs().FirstOrDefault() ?? "reservoir");
        var procName = Path.GetFileName(Environment.ProcessPath ?? "");
        foreach (var n in new[] { argv0, procName, Environment.GetEnvironmentVariable("RESERVOIR_ARGV0") ?? "" })
        {
            if (n.StartsWith("mkfs.reservoir")) { args = ["mkfs", .. args]; break; }
            if (n.StartsWith("fsck.reservoir")) { args = ["fsck", .. args]; break; }
        }
        return Run(args, Console.Out, Console.Error);
    }

    private static readonly HashSet<string> Commands = ["mkfs", "fsck", "inspect", "mount", "umount", "ls", "cat", "cp", "mkdir", "rm", "quota", "qgroup", "stress", "--help", "-h", "-?", "--version"];

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        // The mount helper convention: mount.fuse3 runs `reservoir SOURCE DIR -o OPTS`.
        if (args.Length >= 2 && !Commands.Contains(args[0]) && File.Exists(args[0]) && Directory.Exists(args[1]))
            args = ["mount", .. args];
        var ctx = new CliContext(stdout, stderr);
        var root = new RootCommand("Reservoir: a copy-on-write filesystem with exact space accounting, in one image file.");
        root.Subcommands.Add(MkfsCommand.Build(ctx));
        root.Subcommands.Add(FsckCommand.Build(ctx));
        root.Subcommands.Add(InspectCommand.Build(ctx));
        root.Subcommands.Add(MountCommand.Build(ctx));
        root.Subcommands.Add(UmountCommand.Build(ctx));
        root.Subcommands.Add(StressCommand.Build(ctx));
        root.Subcommands.Add(ExploreCommand.Build(ctx));
        root.Subcommands.Add(PowerCutCommand.Build(ctx));
        root.Subcommands.Add(FuzzCommand.Build(ctx));
        foreach (var c in FileCommands.Build(ctx)) root.Subcommands.Add(c);
        foreach (var c in QuotaCommands.Build(ctx)) root.Subcommands.Add(c);
        foreach (var c in SubvolumeCommands.Build(ctx)) root.Subcommands.Add(c);
        foreach (var c in SendReceiveCommands.Build(ctx)) root.Subcommands.Add(c);
        foreach (var c in PropertyCommands.Build(ctx)) root.Subcommands.Add(c);
        foreach (var c in FilesystemCommands.Build(ctx)) root.Subcommands.Add(c);
        var pr = root.Parse(args);
        if (pr.Errors.Count > 0)
        {
            foreach (var e in pr.Errors) stderr.WriteLine($"reservoir: {e.Message}");
            stderr.WriteLine("Try 'reservoir --help'.");
            return pr.CommandResult.Command.Name == "fsck" ? 16 : 2;
        }
        if (OptionLookingArgument(pr) is { } stray)
        {
            stderr.WriteLine($"reservoir: unrecognized option '{stray}' for '{pr.CommandResult.Command.Name}' (a name that begins with '-' goes after '--', or as ./{stray})");
            stderr.WriteLine("Try 'reservoir --help'.");
            return pr.CommandResult.Command.Name == "fsck" ? 16 : 2;
        }
        try
        {
            return pr.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (FileNotFoundException ex)
        {
            stderr.WriteLine($"reservoir: {ex.Message}");
            return 1;
        }
        catch (FsException ex)
        {
            stderr.WriteLine($"reservoir: {ex.Message}");
            return pr.CommandResult.Command.Name == "fsck" ? 8 : 1;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or InvalidDataException)
        {
            stderr.WriteLine($"reservoir: {ex.Message}");
            return pr.CommandResult.Command.Name == "fsck" ? 8 : 1;
        }
        catch (Exception ex)
        {
            // A bug, not bad input: say so plainly, with the detail a report needs.
            stderr.WriteLine($"reservoir: internal error ({ex.GetType().Name}): {ex.Message}");
            stderr.WriteLine("please report this with the command line that caused it");
            if (Environment.GetEnvironmentVariable("RESERVOIR_DEBUG") == "1") stderr.WriteLine(ex);
            return pr.CommandResult.Command.Name == "fsck" ? 8 : 70;
        }
    }

    /// <summary>
    /// A value bound to a command's argument that looks like an option ("--format", "-x"), not
    /// after "--": most likely an option the command does not have, which the parser binds to
    /// a list argument (`subvolume create IMG /a --format json` made subvolumes named
    /// "--format" and "json"). Values of options are not looked at, nor "-" and a dash and a
    /// digit (`resize -100M`, a generation `-5`).
    /// </summary>
    internal static string? OptionLookingArgument(ParseResult pr)
    {
        var afterDoubleDash = new HashSet<System.CommandLine.Parsing.Token>(ReferenceEqualityComparer.Instance);
        bool seen = false;
        foreach (var t in pr.Tokens)
        {
            if (seen) afterDoubleDash.Add(t);
            else if (t.Type == System.CommandLine.Parsing.TokenType.DoubleDash) seen = true;
        }
        for (System.CommandLine.Parsing.CommandResult? c = pr.CommandResult; c != null; c = c.Parent as System.CommandLine.Parsing.CommandResult)
            foreach (var child in c.Children)
                if (child is System.CommandLine.Parsing.ArgumentResult a)
                    foreach (var t in a.Tokens)
                        if (LooksLikeOption(t.Value) && !afterDoubleDash.Contains(t)) return t.Value;
        return null;

        static bool LooksLikeOption(string v) => v.Length > 1 && v[0] == '-' && (char.IsLetter(v[1]) || (v[1] == '-' && v.Length > 2));
    }
}

/// <summary>Output streams and helpers shared by the commands.</summary>
public sealed class CliContext(TextWriter stdout, TextWriter stderr)
{
    public TextWriter Out { get; } = stdout;
    public TextWriter Err { get; } = stderr;
    /// <summary>Progress goes to stderr only when it is a terminal, so pipes stay clean.</summary>
    public bool Interactive => ReferenceEquals(Err, Console.Error) && !Console.IsErrorRedirected;

    public void Progress(string what)
    {
        if (Interactive) Err.Write($"\r\u001b[K{what}");
    }

    public void ProgressDone()
    {
        if (Interactive) Err.Write("\r\u001b[K");
    }

    public void Json(object value) => Out.WriteLine(System.Text.Json.JsonSerializer.Serialize(value, JsonOpts));

    private static readonly System.Text.Json.JsonSerializerOptions JsonOpts = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower,
        // Read by programs and people, never put into a web page: "<toplevel>" and non-ASCII
        // names as they are, not as \u003C escapes.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}

internal static class CommonOptions
{
    public static Option<string> Format() => new("--format")
    {
        Description = "Output format: text or json",
        DefaultValueFactory = _ => "text",
        CustomParser = null,
    };

    public static bool IsJson(ParseResult pr, Option<string> o)
    {
        var v = pr.GetValue(o) ?? "text";
        if (v is not ("text" or "json")) throw new ArgumentException($"--format must be text or json, not '{v}'");
        return v == "json";
    }
}
