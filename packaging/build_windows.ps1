# Build DeskLM for Windows: dist\desklm\ (the bundle) and dist\DeskLM-<version>-setup.exe.
#
#   powershell -ExecutionPolicy Bypass -File packaging\build_windows.ps1
#
# Needs Python 3.11+ (or set $env:PYTHON), Visual Studio Build Tools with the C++ workload,
# CMake, and Inno Setup 6 (iscc.exe on PATH or in its default folder). llama.cpp is compiled
# for any x86-64 CPU with AVX2, not only this one (GGML_NATIVE=OFF): 10-20 minutes.
# .github/workflows/installers.yml runs exactly this on a hosted windows runner.
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest
Set-Location (Join-Path $PSScriptRoot "..")

# PowerShell does not stop on a failing program: check every exit code. (A plain function,
# not an advanced one, so flags such as -m pass through in $args untouched.)
function Invoke-Checked {
    $exe, $rest = $args
    & $exe @rest
    if ($LASTEXITCODE -ne 0) { throw "$exe $($rest -join ' ') failed with exit code $LASTEXITCODE" }
}

$python = if ($env:PYTHON) { $env:PYTHON } else { "python" }
$venv = "build\venv"
$py = "$venv\Scripts\python.exe"
Invoke-Checked $python -m venv $venv
Invoke-Checked $py -m pip install -q --upgrade pip wheel
# --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would hand back a native build
$env:CMAKE_ARGS = "-DGGML_NATIVE=OFF $env:CMAKE_ARGS"
Invoke-Checked $py -m pip install -q --no-cache-dir "llama-cpp-python>=0.3.36,<0.4"
Invoke-Checked $py -m pip install -q ".[package]"
Invoke-Checked $py packaging\make_icons.py
Invoke-Checked $py -m PyInstaller --noconfirm --clean --distpath dist --workpath build\pyinstaller `
    packaging\desklm.spec
$version = (& $py -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])").Trim()

$iscc = (Get-Command iscc.exe -ErrorAction SilentlyContinue).Source
if (-not $iscc) { $iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe" }
if (-not (Test-Path $iscc)) { throw "Inno Setup 6 is missing: winget install JRSoftware.InnoSetup (or choco install innosetup)" }
Invoke-Checked $iscc /Qp "/DAppVersion=$version" packaging\windows\desklm.iss

$setup = "dist\DeskLM-$version-setup.exe"
$bundleMB = [math]::Round((Get-ChildItem dist\desklm -Recurse -File | Measure-Object Length -Sum).Sum / 1MB)
$setupMB = [math]::Round((Get-Item $setup).Length / 1MB)
Write-Host "bundle: dist\desklm ($bundleMB MB); installer: $setup ($setupMB MB)"
