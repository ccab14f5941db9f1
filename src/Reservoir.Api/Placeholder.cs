namespace Reservoir; internal static class ApiPlaceholder { }
