*** Settings ***
Documentation     A small Robot Framework suite for its xUnit output.

*** Test Cases ***
Adds Numbers
    Should Be Equal As Integers    ${2}    2

Fails On Purpose
    Should Be Equal    Zoë    Zoe    names differ

Skipped Case
    Skip    not on this platform

Ünïcødé Name ✓
    Log    hello 日本

Non Critical Failure
    [Tags]    robot:skip-on-failure
    Fail    flaky network
