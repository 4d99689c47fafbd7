# Installs Trinity's five programs (trinity, git-sync, credit-monitor, wake-daemon,
# coordinator) and the orchestrator batch file into one folder: builds the workspace once
# (release), copies them, and adds the folder to your user PATH.
#
#   powershell -ExecutionPolicy Bypass -File scripts\install.ps1                 # into C:\Trinity
#   powershell -ExecutionPolicy Bypass -File scripts\install.ps1 -Dest D:\Trinity
#   ... -From target\release     # copy what is built, without building
#
# Then: `trinity init` (README.md) and `trinity-orchestrator.bat install` (docs\operations.md).
param(
  [string]$Dest = "C:\Trinity",
  [string]$From = ""
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")
$programs = "trinity", "git-sync", "credit-monitor", "wake-daemon", "coordinator"
if ($From -eq "") {
  if (-not (Get-Command cargo -ErrorAction SilentlyContinue)) {
    throw "cargo is missing: install Rust from https://rustup.rs (1.89 or newer)"
  }
  Write-Host "building (release; the first build takes a few minutes)..."
  cargo build --release --locked --workspace --bins
  if ($LASTEXITCODE -ne 0) { throw "the build failed" }
  $From = "target\release"
}
New-Item -ItemType Directory -Force -Path $Dest | Out-Null
foreach ($p in $programs) {
  $src = Join-Path $From "$p.exe"
  if (-not (Test-Path $src)) { throw "$src is missing" }
  Copy-Item $src (Join-Path $Dest "$p.exe") -Force
  Write-Host "installed $(Join-Path $Dest "$p.exe")"
}
Copy-Item "deploy\windows\trinity-orchestrator.bat", "deploy\windows\start-trinity.bat", "deploy\config\trinity.example.toml" $Dest -Force
$userPath = [Environment]::GetEnvironmentVariable("Path", "User")
if (($userPath -split ";") -notcontains $Dest) {
  [Environment]::SetEnvironmentVariable("Path", "$userPath;$Dest", "User")
  Write-Host "added $Dest to your PATH (open a new prompt to use it)"
}
& (Join-Path $Dest "trinity.exe") --version
