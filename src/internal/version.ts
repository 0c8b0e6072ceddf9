/** The package version, written to the ledger's `version` column (a test keeps it equal to package.json). */
export const VERSION = "0.1.0"
